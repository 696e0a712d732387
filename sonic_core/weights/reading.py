"""Safe reading of weight files and strict loading: no pickle code runs, no second copy of the weights.

``read_state_dict`` opens safetensors files with ``safetensors`` and torch pickles with ``weights_only=True``
(memory-mapped when the file is a zip archive; legacy pre-1.6 pickles such as RIFE's ``flownet.pkl`` cannot be
mapped). On top of torch's own allowlist, :data:`DATA_GLOBALS` admits the numpy globals that rebuild arrays, scalars
and dtypes (what training scripts leave in a checkpoint: ``"epoch": np.int64(3)``); they construct data and call
nothing else. Every other global (``os.system``, ``builtins.eval``, a pickled ``nn.Module``'s class) makes torch's
unpickler stop *before* anything is called, and the file is refused in one line naming that global. The tensors are
then taken from a bare state dict or from a checkpoint's ``state_dict`` / ``model_state_dict`` / ``model`` /
``module`` entry (numpy arrays become tensors, a ``DataParallel`` ``module.`` prefix is dropped).

``build_and_load`` builds the module on the meta device and *assigns* the loaded tensors as its parameters,
so with a matching dtype the parameters are the very tensors that were read (for an mmap'ed file: pages of the file).
``load_strict`` loads into a module that already exists. Both check keys and shapes first
(:func:`check_state_dict`), so a foreign file is one line naming the file and the fix, not torch's key dump.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..device import parse_dtype
from ..errors import SonicWeightsError

FETCH_COMMAND = "python -m sonic_core fetch-weights"
DEFAULT_FIX = f"run `{FETCH_COMMAND}` or copy the official file there"
SAFETENSORS_SUFFIX = ".safetensors"
ZIP_MAGIC = b"PK\x03\x04"
CHECKPOINT_ENTRIES = ("state_dict", "model_state_dict", "model", "module")  # where training scripts put the weights
DATA_PARALLEL_PREFIX = "module."
MODULE_FIX = ("it is a whole pickled model, whose class only loads by running its code: load it where it was made "
              "and save its state_dict() instead (torch.save(model.state_dict(), path))")


def _numpy_data_globals() -> list[object]:
    """numpy's array / scalar / dtype constructors, under both the numpy 2 (``numpy._core``) and the numpy 1
    (``numpy.core``) names a file may reference. Object, void and string dtypes are left out: they are not tensors."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    found: list[object] = [np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        found += [function, (function, f"numpy.core.multiarray.{name}"), (function, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")
              and n not in ("ObjectDType", "VoidDType", "StringDType", "StrDType", "BytesDType")] if dtypes else []
    return found


DATA_GLOBALS = _numpy_data_globals()
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def file_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"TorchScript"`` (a zip with ``code/``: the face detector), ``"torch zip"`` (torch >= 1.6
    ``torch.save``), ``"legacy pickle"`` (older ``torch.save``, e.g. RIFE's ``flownet.pkl``) or ``"unknown"``;
    from the name and the first bytes (and a zip's member names) only."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "TorchScript"
        return "torch zip" if any(n.endswith("data.pkl") for n in names) else "unknown"
    with path.open("rb") as fh:
        head = fh.read(2)
    return "legacy pickle" if len(head) == 2 and head[0] == 0x80 and head[1] <= pickle.HIGHEST_PROTOCOL else "unknown"


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


def _pickle_streams(path: Path) -> Iterator[bytes]:
    """The pickles of a torch file, for inspection only: ``data.pkl`` of a zip archive (read from the archive, not
    extracted), or the leading pickles of a legacy file (magic number, protocol, system info, the object)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith("/data.pkl") or name == "data.pkl":
                    yield archive.read(name)
        return
    with path.open("rb") as fh:
        for _ in range(4):
            start = fh.tell()
            for _op in pickletools.genops(fh):  # reads opcodes up to STOP; nothing is constructed
                pass
            end = fh.tell()
            fh.seek(start)
            yield fh.read(end - start)


def _scan_pickle(path: Path) -> tuple[list[str], set[str]]:
    """The globals (``module.name``) and the strings of a torch file's pickles, read with
    :func:`pickletools.genops`, which decodes opcodes and constructs nothing."""
    globals_: list[str] = []
    strings: set[str] = set()
    try:
        for data in _pickle_streams(path):
            recent: list[str] = []
            for op, arg, _pos in pickletools.genops(data):
                if op.name == "GLOBAL":  # protocol <= 2 writes Python 2 names: __builtin__.eval is builtins.eval
                    module, name = str(arg).split(" ", 1)
                    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
                    globals_.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
                elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
                    globals_.append(".".join(recent[-2:]))
                elif isinstance(arg, str):
                    strings.add(arg)
                    recent.append(arg)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError):
        pass  # a truncated file: what was decoded so far still names the global
    return globals_, strings


def _refusal(path: Path, exc: pickle.UnpicklingError, fix: str) -> SonicWeightsError:
    """One line for a pickle that torch's ``weights_only`` unpickler stopped at: the global it would have called
    (torch shows some under Python 2 names or without their module, ``commands.Popen``, ``eval``; the file's own
    opcodes, read with Python 3 names, give ``subprocess.Popen``, ``builtins.eval``)."""
    match = _REFUSED_GLOBAL.search(str(exc))
    refused = match.group(1) if match else "a non-data global"
    globals_, strings = _scan_pickle(path)
    leaf = refused.rsplit(".", 1)[-1]
    name = next((g for g in globals_ if g.rsplit(".", 1)[-1] == leaf), refused)
    if {"_parameters", "_modules"} <= strings:  # an nn.Module's __dict__
        return SonicWeightsError(f"{path} holds a pickled nn.Module (class {name}), refused without running it: "
                                 f"{MODULE_FIX}")
    return SonicWeightsError(f"{path} references {name}, which is code, not data: loading it was refused to execute "
                             f"code, and nothing was run; get the official file ({fix})")


def _read_torch(path: Path, fix: str, kind: str) -> object:
    with path.open("rb") as fh:
        magic = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if magic == ZIP_MAGIC and not is_zip:
        raise SonicWeightsError(f"{path} is a truncated or corrupt torch archive; delete it and {fix}")
    try:
        with torch.serialization.safe_globals(DATA_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):
            raise _refusal(path, exc, fix) from None
        raise SonicWeightsError(f"{path} is not a plain tensor pickle (torch weights_only refused it); "
                                f"get the official file ({fix})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SonicWeightsError(f"{path} is not a readable {kind} file ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}; truncated or corrupt); "
                                f"delete it and {fix}") from None


def _is_numeric_array(value: object) -> bool:
    return isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biufc"


def _as_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if _is_numeric_array(value):
        return torch.from_numpy(np.array(value))  # np.array: a writable copy, also of 0-d scalars
    return None


def extract_state_dict(loaded: object, source: str, fix: str = DEFAULT_FIX) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict in what a torch pickle held: the object itself, or the ``state_dict`` /
    ``model_state_dict`` / ``model`` / ``module`` entry of a training checkpoint (its other entries, such as the
    epoch, are ignored). numpy arrays become tensors; a ``module.`` prefix on every key (``DataParallel``) is
    dropped."""
    if isinstance(loaded, Mapping) and not all(isinstance(v, torch.Tensor) or _is_numeric_array(v)
                                                    for v in loaded.values()):
        loaded = next((loaded[k] for k in CHECKPOINT_ENTRIES if isinstance(loaded.get(k), Mapping)), loaded)
    if not isinstance(loaded, Mapping) or not loaded:
        raise SonicWeightsError(f"{source} holds a {type(loaded).__name__}, not a state dict of tensors (name -> "
                                f"tensor); get the official file ({fix})")
    out: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        tensor = _as_tensor(value)
        if not isinstance(key, str) or tensor is None:
            raise SonicWeightsError(f"{source} is not a state dict of tensors (name -> tensor): entry {key!r} is a "
                                    f"{type(value).__name__}; get the official file ({fix})")
        out[key] = tensor
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in out):
        out = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in out.items()}
    return out


def read_state_dict(path: str | os.PathLike, *, keys: Iterable[str] | None = None, fix: str = DEFAULT_FIX,
                    kind: str = "torch") -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict stored in ``path`` (safetensors or a torch pickle), read without running code
    (:func:`extract_state_dict` says which pickled objects are accepted).

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
    return extract_state_dict(_read_torch(path, fix, kind), str(path), fix)


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
