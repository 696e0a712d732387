"""Command-line options shared by the subcommands: knobs whose type, default and help come from
:class:`~sonic_core.settings.SonicSettings` (one place for every default), and the output-path check."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import SonicInputError
from ..paths import MAX_NAME_BYTES, check_writable_folder, os_reason
from ..settings import SonicSettings


def knob_option(parser: argparse.ArgumentParser, name: str, flag: str | None = None, default: Any = None,
                **kwargs: Any) -> None:
    """``--name`` (or ``flag``) whose type, help and, unless ``default`` is given, default come from SonicSettings."""
    knob = SonicSettings.knob(name)
    default = knob.default if default is None else default
    parser.add_argument(flag or "--" + name.replace("_", "-"), dest=name, type=kwargs.pop("type", knob.type),
                        default=default, help=f"{knob.help} (default {default})", **kwargs)


def check_output_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path when an MP4 can be written there; else a one-line :class:`SonicInputError`."""
    path = Path(out).expanduser()
    if path.suffix.lower() != ".mp4":
        raise SonicInputError(f"--out {str(out)!r} is not an .mp4 path: name the output like clip.mp4")
    if len(path.name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise SonicInputError(f"--out {str(out)[:40]!r}...: the file name is longer than the file system's "
                              f"{MAX_NAME_BYTES} bytes; choose a shorter name")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise SonicInputError(f"--out {str(out)!r} is a directory: give a file path such as "
                                  f"{str(path / 'clip.mp4')!r}")
        if not parent.is_dir():
            raise SonicInputError(f"--out {str(out)!r}: the folder {str(parent)!r} does not exist; create it first")
    except (OSError, ValueError) as exc:  # the stat itself refused the name (too long, a NUL byte)
        raise SonicInputError(f"--out {str(out)!r} cannot be used as a file name ({os_reason(exc)}); "
                              "choose another") from None
    check_writable_folder(parent, f"--out {str(out)!r}", "choose another folder")
    return path
