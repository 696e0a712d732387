"""Where the official weight files live: the ComfyUI ``models/`` tree, a standalone weights folder, or both.

Accepted trees (DESIGN "Weight layout accepted"):

* ComfyUI: ``models/sonic/{unet.pth,audio2token.pth,audio2bucket.pth,yoloface_v5m.pt}``, ``models/sonic/RIFE/
  flownet.pkl``, ``models/sonic/whisper-tiny/``, SVD as the diffusers folder ``models/sonic/stable-video-diffusion-
  img2vid-xt/`` or a single ``.safetensors`` anywhere below ``models/checkpoints/`` (``checkpoints/video/svd_xt.
  safetensors``).
* Standalone / hub: the same files under a weights folder (``--weights DIR``, else ``$SONIC_WEIGHTS``, else
  ``~/.cache/sonic``), either flat or below ``sonic/``, with the three Sonic ``.pth`` files also accepted in the
  official repo's ``Sonic/`` subfolder (the layout ``fetch-weights`` writes).

The SVD single file is chosen by its keys, not its name (its safetensors header is read, nothing else): it must
hold the VAE with the temporal decoder and the CLIP image encoder. A file that looks like one (``svd`` in its name,
or SVD's CLIP image conditioner inside) but is not, e.g. ``svd_xt_image_decoder.safetensors``, is recorded in
:attr:`WeightFiles.rejected` with the reason, which the errors and ``weights check`` show.

Each ``.pth`` / ``.pkl`` may also be a ``.safetensors`` of the same name (``python -m sonic_core weights convert``
writes one beside the pickle); where both exist the safetensors file is used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SonicWeightsError
from .reading import FETCH_COMMAND, safetensors_keys
from .svd_single_file import CLIP_PREFIX, single_file_problem

WEIGHTS_ENV = "SONIC_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/sonic")
SVD_FOLDER = "stable-video-diffusion-img2vid-xt"
SVD_FILE_GLOB = "*.safetensors"
SVD_DEFAULT_FILE = "svd_xt.safetensors"
WHISPER_FOLDER = "whisper-tiny"
ASSETS_ENV = "SONIC_ASSETS_DIR"
REPO = Path(__file__).resolve().parents[2]
RIFE_WEIGHTS = Path("RIFE") / "flownet.pkl"
RIFE_DEMO_FRAMES = (Path("RIFE") / "I0_0.png", Path("RIFE") / "I0_1.png")

# Component -> candidate paths relative to a Sonic root, first one = where a missing file should go.
SONIC_FILES: dict[str, tuple[str, ...]] = {
    "unet": ("Sonic/unet.pth", "unet.pth"),
    "audio2token": ("Sonic/audio2token.pth", "audio2token.pth"),
    "audio2bucket": ("Sonic/audio2bucket.pth", "audio2bucket.pth"),
    "yoloface": ("yoloface_v5m.pt",),
    "rife": ("RIFE/flownet.pkl",),
}
COMPONENTS = (*SONIC_FILES, "whisper", "svd")
# What a user looks for, per component (the weights list names the missing ones this way).
FILE_NAMES = {"unet": "unet.pth", "audio2token": "audio2token.pth", "audio2bucket": "audio2bucket.pth",
              "yoloface": "yoloface_v5m.pt", "rife": "RIFE/flownet.pkl", "whisper": f"{WHISPER_FOLDER}/",
              "svd": f"{SVD_DEFAULT_FILE} (checkpoints)"}
PICKLE_SUFFIXES = (".pth", ".pkl")  # a .safetensors of the same name is taken first (yoloface's .pt is TorchScript)
OPTIONAL = frozenset({"yoloface", "rife"})  # a fallback detector exists; RIFE only runs with interpolation on


def default_weights_dir() -> Path:
    """``$SONIC_WEIGHTS`` if set, else ``~/.cache/sonic``."""
    return Path(os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()


def assets_dir() -> Path:
    """Where ``scripts/fetch_assets.py`` puts the demo and test assets (real RIFE weights and frames):
    ``$SONIC_ASSETS_DIR``, default ``<repo>/.cache/assets`` (git-ignored)."""
    return Path(os.environ.get(ASSETS_ENV) or REPO / ".cache" / "assets")


@dataclass(frozen=True)
class SearchRoot:
    """One place that is searched: Sonic roots (for the .pth/.pkl/.pt files and folders) and checkpoint folders,
    each ``(folder, with subfolders)``: ComfyUI's ``checkpoints`` tree is searched whole, a standalone weights
    folder only at its top (its subfolders hold the other components)."""

    sonic_dirs: tuple[Path, ...]
    checkpoint_dirs: tuple[tuple[Path, bool], ...]

    @classmethod
    def comfy(cls, models_dir: Path) -> SearchRoot:
        return cls.comfy_folders(models_dir / "sonic", [models_dir / "checkpoints"])

    @classmethod
    def comfy_folders(cls, sonic_dir: Path, checkpoint_dirs: Sequence[Path]) -> SearchRoot:
        """One ComfyUI ``sonic`` folder with every ``checkpoints`` folder ComfyUI knows (the first one is where a
        missing SVD file is said to go), each searched with its subfolders."""
        checkpoints = tuple(checkpoint_dirs) or (sonic_dir.parent / "checkpoints",)
        return cls((sonic_dir,), tuple((d, True) for d in checkpoints))

    @classmethod
    def standalone(cls, weights_dir: Path) -> SearchRoot:
        return cls((weights_dir, weights_dir / "sonic"), ((weights_dir, False), (weights_dir / "checkpoints", True)))


@dataclass(frozen=True)
class Rejected:
    """A file that was considered for ``component`` and not taken, and why."""

    component: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass(frozen=True)
class WeightFiles:
    """The located file (or folder) of every component, ``None`` where it was not found.

    ``svd_kind`` is ``"file"`` for a single Stability checkpoint, ``"folder"`` for a diffusers folder, ``None`` when
    neither was found. ``expected`` says where each missing component should be put; ``rejected`` lists the
    candidate files that were looked at and not taken, with the reason (:meth:`explain` says it in one line).
    """

    unet: Path | None = None
    audio2token: Path | None = None
    audio2bucket: Path | None = None
    yoloface: Path | None = None
    rife: Path | None = None
    whisper: Path | None = None
    svd: Path | None = None
    svd_kind: str | None = None
    expected: dict[str, Path] = field(default_factory=dict, compare=False)
    rejected: tuple[Rejected, ...] = field(default=(), compare=False)

    def missing(self, *components: str) -> list[str]:
        """The components among ``components`` (default: every required one) that were not found."""
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown:
            raise ValueError(f"unknown weight component(s) {unknown}; known: {list(COMPONENTS)}")
        wanted = components or tuple(c for c in COMPONENTS if c not in OPTIONAL)
        return [c for c in wanted if getattr(self, c) is None]

    def require(self, *components: str) -> WeightFiles:
        """Raise one :class:`SonicWeightsError` naming every missing file and where it goes; else return ``self``."""
        if self.missing(*components):
            raise SonicWeightsError(f"{self.explain(*components)}; run `{FETCH_COMMAND}` "
                                    "or copy the official files to those paths")
        return self

    def missing_files(self, *components: str) -> list[str]:
        """The file names of :meth:`missing` (``audio2bucket.pth``, ``whisper-tiny/``...), as a user looks for them."""
        return [FILE_NAMES[c] for c in self.missing(*components)]

    def explain(self, *components: str) -> str:
        """One line: each missing component among ``components`` (default: the required ones) and where it goes,
        then the files that were rejected for them and why; ``""`` when none is missing."""
        missing = self.missing(*components)
        if not missing:
            return ""
        where = ", ".join(f"{c} -> {self.expected.get(c, '?')}" for c in missing)
        rejected = [str(r) for r in self.rejected if r.component in missing]
        return f"missing Sonic weights: {where}" + (f"; not used: {'; '.join(rejected)}" if rejected else "")


def _with_safetensors(name: str) -> tuple[str, ...]:
    """``name`` preceded by its safetensors twin for a torch pickle (``weights convert`` writes it beside)."""
    pickle = Path(name)
    return (str(pickle.with_suffix(".safetensors")), name) if pickle.suffix in PICKLE_SUFFIXES else (name,)


def _first_file(dirs: tuple[Path, ...], names: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for name in names:
            for candidate in _with_safetensors(name):
                if (d / candidate).is_file():
                    return d / candidate
    return None


def _whisper_dir(dirs: tuple[Path, ...]) -> Path | None:
    for d in dirs:
        folder = d / WHISPER_FOLDER
        if (folder / "model.safetensors").is_file():
            return folder
    return None


@functools.lru_cache(maxsize=512)
def _header_keys(path: Path, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    """A safetensors file's tensor names, cached per version of the file (the node list is built often)."""
    return tuple(safetensors_keys(path))


def _svd_problem(path: Path) -> tuple[str | None, bool]:
    """Why ``path`` is not an SVD single file (``None``: it is one), and whether it is worth reporting: ``svd`` in
    its name or SVD's CLIP image conditioner inside (an image model's checkpoint beside it is simply not one)."""
    try:
        stat = path.stat()
        keys = _header_keys(path, stat.st_mtime_ns, stat.st_size)
    except (SonicWeightsError, OSError) as exc:
        return f"unreadable: {exc}", "svd" in path.name.lower()
    notable = "svd" in path.name.lower() or any(k.startswith(CLIP_PREFIX) for k in keys)
    return single_file_problem(keys), notable


def _svd(root: SearchRoot) -> tuple[Path | None, str | None, list[Rejected]]:
    for d in root.sonic_dirs:
        folder = d / SVD_FOLDER
        if (folder / "vae").is_dir() and (folder / "image_encoder").is_dir():
            return folder, "folder", []
    chosen: Path | None = None
    rejected: list[Rejected] = []
    seen: set[Path] = set()  # one folder ComfyUI knows may lie inside another
    for d, recursive in root.checkpoint_dirs:
        if not d.is_dir():
            continue
        found = d.rglob(SVD_FILE_GLOB) if recursive else d.glob(SVD_FILE_GLOB)
        # svd_xt.safetensors sorts before svd_xt_1_1.safetensors: the release Sonic was trained on
        for path in sorted((p for p in found if p.is_file() and p.resolve() not in seen), key=lambda p: (p.name, p)):
            seen.add(path.resolve())
            problem, notable = _svd_problem(path)
            if problem is None and chosen is None:
                chosen = path
            elif problem is None:
                rejected.append(Rejected("svd", path, f"another SVD checkpoint; {chosen} is used"))
            elif notable:
                rejected.append(Rejected("svd", path, problem))
    return chosen, "file" if chosen else None, rejected


def _locate_in(root: SearchRoot) -> dict[str, object]:
    found: dict[str, object] = {c: _first_file(root.sonic_dirs, names) for c, names in SONIC_FILES.items()}
    found["whisper"] = _whisper_dir(root.sonic_dirs)
    found["svd"], found["svd_kind"], found["rejected"] = _svd(root)
    return found


def _expected(root: SearchRoot) -> dict[str, Path]:
    base = root.sonic_dirs[0]
    expected = {c: base / names[0] for c, names in SONIC_FILES.items()}
    expected["whisper"] = base / WHISPER_FOLDER / "model.safetensors"
    expected["svd"] = root.checkpoint_dirs[0][0] / SVD_DEFAULT_FILE
    return expected


def locate_weights(weights_dir: str | os.PathLike | None = None,
                   comfy_models_dir: str | os.PathLike | None = None,
                   comfy_root: SearchRoot | None = None) -> WeightFiles:
    """Find every component, searching the ComfyUI ``models/`` folder first (or ``comfy_root``: the folders ComfyUI
    knows, :meth:`SearchRoot.comfy_folders`), then the standalone weights folder.

    Only the headers of ``.safetensors`` checkpoints are read (to tell the SVD file by its keys); nothing else is
    opened or verified here (that happens when a file is read). A component that is absent is ``None``.
    """
    roots = [] if comfy_models_dir is None else [SearchRoot.comfy(Path(comfy_models_dir).expanduser())]
    roots += [] if comfy_root is None else [comfy_root]
    roots.append(SearchRoot.standalone(Path(weights_dir).expanduser() if weights_dir else default_weights_dir()))
    found: dict[str, object] = {}
    rejected: list[Rejected] = []
    for root in roots:
        located = _locate_in(root)
        rejected += located.pop("rejected")
        for key, value in located.items():
            if found.get(key) is None:
                found[key] = value
    return WeightFiles(**found, expected=_expected(roots[0]), rejected=tuple(rejected))
