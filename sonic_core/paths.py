"""The path rules every user-supplied name goes through: which configuration file to read and how (one reader for
every TOML/JSON config), and whether a name stays inside the folder it names a file in (one helper for every node
and route, VideoHelperSuite style)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from .errors import SonicInputError

MAX_NAME_BYTES = 255  # NAME_MAX of the common file systems (ext4, APFS, NTFS in UTF-16 units)

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


def config_file(explicit: str | os.PathLike | None, env_var: str,
                bundled: str | os.PathLike | None = None) -> Path | None:
    """The configuration file to read: ``explicit`` when given, else ``$env_var`` when set, else ``bundled``
    (``None`` when none of them is)."""
    chosen = explicit or os.environ.get(env_var) or bundled
    return Path(chosen).expanduser() if chosen else None


def os_reason(exc: OSError | ValueError) -> str:
    """The short reason of a file-system refusal ("File name too long", "embedded null byte"), for one-line
    messages."""
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def existing_file(path: str | os.PathLike, what: str, fix: str,
                  error: type[SonicInputError] = SonicInputError) -> Path:
    """``path`` as a Path when it names an existing regular file; else one line (an ``error``) naming ``what``, the
    path and the ``fix``: missing, a directory, or a name the file system refuses (too long, a NUL byte). The path
    is shown as a repr, so a name holding a newline still gives one line."""
    file = Path(path)
    try:
        if file.is_file():
            return file
        problem = "is a directory, not a file" if file.is_dir() else "does not exist"
    except (OSError, ValueError) as exc:  # the stat itself refused the name
        problem = f"cannot be used as a file name ({os_reason(exc)})"
    raise error(f"{what} {str(path)!r} {problem}: {fix}")


def check_writable_folder(folder: str | os.PathLike, what: str, fix: str) -> None:
    """One line naming ``what`` and the ``fix`` unless a file can be created in ``folder`` (tried, not guessed from
    the permission bits: those say nothing for root or on a read-only mount); the trial file is never left."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SonicInputError(f"{what}: the folder {str(folder)!r} is not writable ({os_reason(exc)}); {fix}") \
            from None


def read_config(path: Path, what: str, kind: Literal["toml", "json"],
                missing: str = "pass an existing file") -> dict[str, Any]:
    """The parsed TOML or JSON file at ``path``; one line naming ``what`` and the fix when it is missing, not a
    readable file or invalid."""
    file = existing_file(path, what, missing)
    try:
        text = file.read_text(encoding="utf-8")
        table = tomllib.loads(text) if kind == "toml" else json.loads(text)
    except OSError as exc:
        raise SonicInputError(f"{what} {str(path)!r} cannot be read ({os_reason(exc)}): {missing}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SonicInputError(f"{what} {str(path)!r} is not valid {kind.upper()} ({exc}): fix the file") from None
    if not isinstance(table, dict):
        raise SonicInputError(f"{what} {str(path)!r} holds a {type(table).__name__}, not a table of settings: "
                              "fix the file")
    return table


def relative_name(name: str, what: str, fix: str = "name a file inside the folder") -> str:
    """``name`` normalised, when it is a relative path that stays inside its folder; else one line that names the
    input (``what``) and the ``fix``. Checked on the text, before any file system access: control characters (a NUL
    byte, a newline) and parts longer than a file system allows are refused too."""
    if not isinstance(name, str):
        raise SonicInputError(f"{what} must be a text name, got {type(name).__name__}; {fix}")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise SonicInputError(f"{what} {name!r} holds a control character (NUL, newline, tab...); {fix}")
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise SonicInputError(f"{what} {name!r}: a relative name is needed, not an absolute path; {fix}")
    if name.endswith(("/", "\\")):
        raise SonicInputError(f"{what} {name!r} names a folder, not a file; {fix}")
    parts = Path(name.replace("\\", "/")).parts
    if ".." in parts:
        raise SonicInputError(f"{what} {name!r}: '..' is not allowed; {fix}")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        raise SonicInputError(f"{what} {name[:40]!r}...: a part of the name is longer than the file system's "
                              f"{MAX_NAME_BYTES} bytes; {fix}")
    return os.path.normpath(name)


def inside(path: str | os.PathLike, folders: list[str | os.PathLike]) -> bool:
    """Whether ``path``, with every link resolved, lies inside one of ``folders`` (also resolved)."""
    real = os.path.realpath(path)
    return any(os.path.commonpath((os.path.realpath(folder), real)) == os.path.realpath(folder)
               for folder in folders)
