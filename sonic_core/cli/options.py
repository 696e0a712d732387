"""Command-line options shared by the subcommands: knobs whose type, default and help come from
:class:`~sonic_core.settings.SonicSettings` (one place for every default), and the output-path check."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import SonicInputError
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
    if path.is_dir():
        raise SonicInputError(f"--out {str(out)!r} is a directory: give a file path such as {path / 'clip.mp4'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SonicInputError(f"--out {str(out)!r}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise SonicInputError(f"--out {str(out)!r}: the folder {str(parent)!r} is not writable; choose another")
    return path
