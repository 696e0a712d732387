"""``weights check``: every located file with its format, dtypes, size and sha256, and whether it loads into our
network (keys and shapes, strict), without building a network's weights.

Each network is built on the meta device (shapes only) from a :class:`~sonic_core.models.bundle.ModelConfigs` --
the published configs, or the tiny model's for a tree of that size -- and the component's file is read with the
loader's own readers (memory-mapped where the format allows; released after each component), so a file that
passes here is exactly a file :func:`~.loader.load_sonic_models` accepts. The face detector is TorchScript: it
passes when ``torch.jit.load`` opens it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import SonicWeightsError
from ..models.bundle import ModelConfigs
from .components import (CLIP_FIX, RIFE_FIX, SVD_FILES, UNET_FIX, WHISPER_FILE, WHISPER_FIX, load_svd_parts,
                         load_yoloface, read_rife, read_svd_folder_part, read_unet, read_whisper_encoder,
                         svd_folder_file)
from .layout import COMPONENTS, OPTIONAL, WeightFiles
from .reading import DEFAULT_FIX, check_state_dict, file_format, read_state_dict

HASH_CHUNK = 1 << 20
OPTIONAL_WHY = {"yoloface": "optional: OpenCV's Haar cascade finds the face instead",
                "rife": "optional: without it the video is 12.5 fps (no interpolation)"}


@dataclass(frozen=True)
class FileCheck:
    """One file of a component: what it is and whether it loads (``problem`` says why not)."""

    component: str
    path: str
    format: str
    dtypes: list[str]
    size: int
    sha256: str
    loads: bool
    problem: str | None = None


@dataclass(frozen=True)
class WeightsCheck:
    """Every file found, the components missing (-> where each goes) and the candidate files not used."""

    files: list[FileCheck]
    missing: dict[str, str]
    optional_missing: dict[str, str]
    rejected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every required component is there and every file found loads."""
        return not self.missing and all(f.loads for f in self.files)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(component: str, path: Path, tensors: Mapping[str, torch.Tensor] | None,
              problem: str | None) -> FileCheck:
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in (tensors or {}).values()})
    return FileCheck(component, str(path), file_format(path), dtypes, path.stat().st_size, sha256_of(path),
                     problem is None, problem)


def _against(factory: Callable[[], torch.nn.Module], state_dict: Mapping[str, torch.Tensor], source: Path,
             fix: str) -> None:
    with torch.device("meta"):
        model = factory()
    check_state_dict(model.state_dict(), state_dict, type(model).__name__, str(source), fix)


def _check_one(component: str, path: Path, read: Callable[[], Mapping[str, torch.Tensor]],
               factory: Callable[[], torch.nn.Module], fix: str) -> FileCheck:
    tensors: Mapping[str, torch.Tensor] | None = None
    try:
        tensors = read()
        _against(factory, tensors, path, fix)
        return _describe(component, path, tensors, None)
    except SonicWeightsError as exc:
        return _describe(component, path, tensors, str(exc))


def _check_svd(files: WeightFiles, build: Mapping[str, Callable[[], torch.nn.Module]]) -> list[FileCheck]:
    source = files.svd
    if files.svd_kind == "folder":
        out = []
        for part in SVD_FILES:
            try:
                path = svd_folder_file(source, part)
            except SonicWeightsError as exc:
                out.append(FileCheck(f"svd.{part}", str(source / SVD_FILES[part][0]), "-", [], 0, "", False,
                                     str(exc)))
                continue
            out.append(_check_one(f"svd.{part}", path, lambda p=part: read_svd_folder_part(source, p), build[part],
                                  CLIP_FIX if part == "image_encoder" else DEFAULT_FIX))
        return out
    tensors: dict[str, torch.Tensor] = {}
    try:
        parts = load_svd_parts(source)
        tensors = {f"{part}.{k}": v for part, sd in parts.items() for k, v in sd.items()}
        _against(build["vae"], parts["vae"], source, DEFAULT_FIX)
        _against(build["image_encoder"], parts["image_encoder"], source, CLIP_FIX)
        return [_describe("svd", source, tensors, None)]
    except SonicWeightsError as exc:
        return [_describe("svd", source, tensors, str(exc))]


def _check_yoloface(path: Path) -> FileCheck:
    try:
        detector = load_yoloface(path)
        return _describe("yoloface", path, detector.state_dict(), None)
    except SonicWeightsError as exc:
        return _describe("yoloface", path, None, str(exc))


def check_weights(files: WeightFiles, configs: ModelConfigs | None = None) -> WeightsCheck:
    """:class:`WeightsCheck` of a located set against ``configs`` (default: the published ones)."""
    build = (configs or ModelConfigs.official()).factories()
    readers: dict[str, tuple[Callable[[Path], Mapping[str, torch.Tensor]], str, str]] = {
        "unet": (read_unet, "unet", UNET_FIX),
        "audio2token": (read_state_dict, "audio2token", DEFAULT_FIX),
        "audio2bucket": (read_state_dict, "audio2bucket", DEFAULT_FIX),
        "whisper": (read_whisper_encoder, "whisper", WHISPER_FIX),
        "rife": (read_rife, "rife", RIFE_FIX),
    }
    checks: list[FileCheck] = []
    for component in COMPONENTS:
        path = getattr(files, component)
        if path is None:
            continue
        if component == "svd":
            checks += _check_svd(files, build)
        elif component == "yoloface":
            checks.append(_check_yoloface(path))
        else:
            read, model, fix = readers[component]
            file = path / WHISPER_FILE if component == "whisper" else path
            checks.append(_check_one(component, file, lambda r=read, p=path: r(p), build[model], fix))
    absent = files.missing(*COMPONENTS)
    return WeightsCheck(
        files=checks,
        missing={c: str(files.expected.get(c, "?")) for c in absent if c not in OPTIONAL},
        optional_missing={c: OPTIONAL_WHY[c] for c in absent if c in OPTIONAL},
        rejected=[f"{r.component}: {r}" for r in files.rejected])
