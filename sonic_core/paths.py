"""The path rules every user-supplied name goes through: which configuration file to read and how (one reader for
every TOML/JSON config), and whether a name stays inside the folder it names a file in (one helper for every node
and route, VideoHelperSuite style)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from .errors import SonicInputError

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


def read_config(path: Path, what: str, kind: Literal["toml", "json"],
                missing: str = "pass an existing file") -> dict[str, Any]:
    """The parsed TOML or JSON file at ``path``; one line naming ``what`` and the fix when it is missing or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text) if kind == "toml" else json.loads(text)
    except FileNotFoundError:
        raise SonicInputError(f"{what} {path} does not exist: {missing}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SonicInputError(f"{what} {path} is not valid {kind.upper()} ({exc}): fix the file") from None


def relative_name(name: str, what: str, fix: str = "name a file inside the folder") -> str:
    """``name`` normalised, when it is a relative path that stays inside its folder; else one line that names the
    input (``what``) and the ``fix``. Checked on the text, before any file system access."""
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise SonicInputError(f"{what} {name!r}: a relative name is needed, not an absolute path; {fix}")
    if name.endswith(("/", "\\")):
        raise SonicInputError(f"{what} {name!r} names a folder, not a file; {fix}")
    if ".." in Path(name.replace("\\", "/")).parts:
        raise SonicInputError(f"{what} {name!r}: '..' is not allowed; {fix}")
    return os.path.normpath(name)


def inside(path: str | os.PathLike, folders: list[str | os.PathLike]) -> bool:
    """Whether ``path``, with every link resolved, lies inside one of ``folders`` (also resolved)."""
    real = os.path.realpath(path)
    return any(os.path.commonpath((os.path.realpath(folder), real)) == os.path.realpath(folder)
               for folder in folders)
