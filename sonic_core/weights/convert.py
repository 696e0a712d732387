"""Rewriting accepted torch pickles (``.pth`` / ``.pkl`` / ``.ckpt``) as ``.safetensors`` beside them.

A safetensors file is read without unpickling anything and memory-maps on every platform, and
:func:`~.layout.locate_weights` prefers it to the pickle of the same name (``Sonic/unet.safetensors`` before
``Sonic/unet.pth``), so a converted tree no longer depends on the pickle reader at all. What is written is what
:func:`~.reading.read_state_dict` returns: the tensors alone (a checkpoint's other entries and a ``DataParallel``
prefix are left behind). The file appears under its final name only once it is complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import SonicWeightsError
from .reading import SAFETENSORS_SUFFIX, file_format, read_state_dict

CONVERTIBLE_SUFFIXES = (".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class Conversion:
    """One file considered: ``target`` when it was written, else ``reason`` (skipped or refused)."""

    source: Path
    target: Path | None = None
    reason: str | None = None


def _storable(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no storage (safetensors refuses tied or strided views): later sharers are
    copied."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state_dict.items():
        pointer = tensor.untyped_storage().data_ptr()
        tensor = tensor.contiguous()
        out[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor
        seen.add(pointer)
    return out


def convert_file(path: str | os.PathLike) -> Path:
    """Write ``path``'s tensors to ``path`` with a ``.safetensors`` suffix; returns that path.

    Refused (one-line :class:`SonicWeightsError`): a suffix that is not a torch pickle's, a TorchScript archive
    (the face detector: loaded as TorchScript, it has no state dict to convert) and whatever
    :func:`~.reading.read_state_dict` refuses. An existing target is replaced only once the new file is complete.
    """
    path = Path(path)
    if path.suffix not in CONVERTIBLE_SUFFIXES:
        raise SonicWeightsError(f"{path} is not a torch pickle ({', '.join(CONVERTIBLE_SUFFIXES)}); nothing to "
                                f"convert")
    if path.is_file() and file_format(path) == "TorchScript":
        raise SonicWeightsError(f"{path} is a TorchScript archive (code and weights); it is used as it is")
    tensors = _storable(read_state_dict(path))
    target = path.with_suffix(SAFETENSORS_SUFFIX)
    partial = target.with_name(target.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata={"format": "pt", "converted_from": path.name})
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def convert_tree(root: str | os.PathLike) -> list[Conversion]:
    """:func:`convert_file` for ``root`` (a file) or every torch pickle below it (a folder), in path order; one
    file's failure is recorded and the others go on."""
    root = Path(root)
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(p for p in root.rglob("*") if p.suffix in CONVERTIBLE_SUFFIXES and p.is_file())
    else:
        raise SonicWeightsError(f"{root} not found; give a weight file or a folder of them")
    results = []
    for path in candidates:
        try:
            results.append(Conversion(path, target=convert_file(path)))
        except SonicWeightsError as exc:
            results.append(Conversion(path, reason=str(exc)))
    return results
