"""Safe reading of weight files and strict loading: no pickle code runs, no second copy of the weights.

``read_state_dict`` opens safetensors files with ``safetensors`` and torch pickles with ``weights_only=True``
(memory-mapped when the file is a zip archive; legacy pre-1.6 pickles such as RIFE's ``flownet.pkl`` cannot be
mapped). ``build_and_load`` builds the module on the meta device and *assigns* the loaded tensors as its parameters,
so with a matching dtype the parameters are the very tensors that were read (for an mmap'ed file: pages of the file).
``load_strict`` loads into a module that already exists. Both check keys and shapes first
(:func:`check_state_dict`), so a foreign file is one line naming the file and the fix, not torch's key dump.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..device import parse_dtype
from ..errors import SonicWeightsError
from .layout import FETCH_COMMAND

DEFAULT_FIX = f"run `{FETCH_COMMAND}` or copy the official file there"
SAFETENSORS_SUFFIX = ".safetensors"
ZIP_MAGIC = b"PK\x03\x04"


def _check_file(path: Path, fix: str) -> None:
    if not path.is_file():
        raise SonicWeightsError(f"{path} not found; {fix}")
    if path.stat().st_size == 0:
        raise SonicWeightsError(f"{path} is empty (an interrupted download?); delete it and {fix}")


def _truncated(path: Path, exc: Exception, fix: str) -> SonicWeightsError:
    return SonicWeightsError(f"{path} is not a complete safetensors file ({exc}; truncated or corrupt); "
                             f"delete it and {fix}")


def safetensors_keys(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> list[str]:
    """The tensor names stored in a safetensors file (its header only is read)."""
    path = Path(path)
    _check_file(path, fix)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except SafetensorError as exc:
        raise _truncated(path, exc, fix) from None


def _read_safetensors(path: Path, keys: Iterable[str] | None, fix: str) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            stored = set(f.keys())
            names = sorted(stored) if keys is None else list(keys)
            absent = [k for k in names if k not in stored]
            if absent:
                raise SonicWeightsError(f"{path} lacks {len(absent)} expected tensor(s) (e.g. {absent[0]!r}); "
                                        f"it is not the expected checkpoint; {fix}")
            return {k: f.get_tensor(k) for k in names}
    except SafetensorError as exc:
        raise _truncated(path, exc, fix) from None


def _read_torch(path: Path, fix: str, kind: str) -> object:
    with path.open("rb") as fh:
        magic = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if magic == ZIP_MAGIC and not is_zip:
        raise SonicWeightsError(f"{path} is a truncated or corrupt torch archive; delete it and {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):
            raise SonicWeightsError(f"{path} references Python code, and loading it was refused to execute code; "
                                    f"get the official file ({fix})") from None
        raise SonicWeightsError(f"{path} is not a plain tensor pickle (torch weights_only refused it); "
                                f"get the official file ({fix})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SonicWeightsError(f"{path} is not a readable {kind} file ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}; truncated or corrupt); "
                                f"delete it and {fix}") from None


def read_state_dict(path: str | os.PathLike, *, keys: Iterable[str] | None = None, fix: str = DEFAULT_FIX,
                    kind: str = "torch") -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict stored in ``path`` (safetensors or a torch pickle), read without running code.

    ``keys`` reads only those tensors (safetensors only: the rest of the file is never touched). Every failure is a
    one-line :class:`SonicWeightsError` naming the file and ``fix``; ``kind`` says what an unreadable torch file
    should have been (``"RIFE weights"``).
    """
    path = Path(path)
    _check_file(path, fix)
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path, keys, fix)
    if keys is not None:
        raise ValueError("reading a subset of keys needs a safetensors file")
    loaded = _read_torch(path, fix, kind)
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in loaded.items()):
        raise SonicWeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors (name -> "
                                f"tensor); get the official file ({fix})")
    return dict(loaded)


def check_state_dict(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], what: str,
                     source: str, fix: str = DEFAULT_FIX) -> None:
    """One-line :class:`SonicWeightsError` when keys or shapes of ``state_dict`` differ from ``expected``.

    ``what`` names the model, ``source`` the file and ``fix`` tells the user what to do.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:1]}), {len(wrong)} of the wrong shape (e.g. {wrong[:1]})")
        raise SonicWeightsError(f"{source} does not match {what}: {detail}; {fix}")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                fix: str = DEFAULT_FIX) -> nn.Module:
    """``model.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict`; returns ``model``.

    Floating-point tensors of any dtype are accepted (they are copied into the model's parameters, which keep
    their dtype and device).
    """
    check_state_dict(model.state_dict(), state_dict, type(model).__name__, source, fix)
    model.load_state_dict(state_dict, strict=True)
    return model


def _convert(tensor: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def build_and_load(factory: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], *,
                   dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
                   source: str, fix: str = DEFAULT_FIX) -> nn.Module:
    """Build ``factory()`` on the meta device and assign ``state_dict`` to it strictly: one copy of the weights.

    Floating tensors are cast to ``dtype`` (``fp32``/``fp16``/``bf16`` or a torch dtype) when given, else they keep
    the file's dtype; a tensor already of that dtype on ``device`` becomes the parameter itself (shared storage).
    The module is returned in eval mode with gradients off. Buffers the module creates itself but does not save
    (non-persistent) cannot be recovered from the meta device, so such a module is refused with an error naming them.
    """
    dtype = None if dtype is None else parse_dtype(dtype)
    with torch.device("meta"):
        model = factory()
    check_state_dict(model.state_dict(), state_dict, type(model).__name__, source, fix)
    device = torch.device(device)
    model.load_state_dict({k: _convert(v, dtype, device) for k, v in state_dict.items()}, strict=True, assign=True)
    left_on_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left_on_meta:
        raise SonicWeightsError(f"{type(model).__name__} keeps tensors outside its state dict "
                                f"({left_on_meta[:3]}); they cannot be built on the meta device")
    return model.eval().requires_grad_(False)
