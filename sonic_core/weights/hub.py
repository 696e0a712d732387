"""``fetch-weights``: download the official files from the Hugging Face hub into the standalone tree.

``huggingface_hub`` is imported only here (it is not a runtime dependency of the node pack). Downloads go through
the hub cache (``hf_hub_download`` resumes interrupted files) and are then hard-linked (or copied, across file
systems) into ``dest`` in the layout :func:`~sonic_core.weights.layout.locate_weights` reads:

``dest/Sonic/{unet,audio2token,audio2bucket}.pth``, ``dest/RIFE/flownet.pkl``, ``dest/yoloface_v5m.pt``,
``dest/stable-video-diffusion-img2vid-xt/{vae,image_encoder}/`` (fp16 safetensors + config.json only: the 3 GB SVD
UNet is never fetched, Sonic's unet.pth replaces it) and ``dest/whisper-tiny/``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import SonicDependencyError, SonicWeightsError
from .layout import SVD_FOLDER, WHISPER_FOLDER, WeightFiles, locate_weights


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository and where it goes below ``dest``."""

    repo: str
    filename: str
    folder: str = ""  # sub-folder of dest that mirrors the repository

    def target(self, dest: Path) -> Path:
        return dest / self.folder / self.filename

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/blob/main/{self.filename}"


SONIC_REPO = "LeonJoe13/Sonic"
SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"  # gated: accept the licence, then use a token
WHISPER_REPO = "openai/whisper-tiny"
HUB_FILES: tuple[HubFile, ...] = (
    *(HubFile(SONIC_REPO, name) for name in ("Sonic/unet.pth", "Sonic/audio2token.pth", "Sonic/audio2bucket.pth",
                                             "RIFE/flownet.pkl", "yoloface_v5m.pt")),
    *(HubFile(SVD_REPO, name, SVD_FOLDER) for name in ("vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
                                                       "image_encoder/config.json",
                                                       "image_encoder/model.fp16.safetensors")),
    *(HubFile(WHISPER_REPO, name, WHISPER_FOLDER) for name in ("model.safetensors", "config.json",
                                                               "preprocessor_config.json")),
)


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError:
        raise SonicDependencyError("fetch-weights needs huggingface_hub: pip install huggingface_hub "
                                   "(or copy the official files by hand, see README 'Weights')") from None
    return huggingface_hub


def _place(cached: Path, target: Path) -> None:
    """Hard-link the cached blob into the tree (no second copy on disk); copy when linking is impossible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(cached.resolve(), partial)
    except OSError:
        shutil.copyfile(cached, partial)
    partial.replace(target)


def _remote_sizes(hub, repo: str, names: list[str], token: str | None) -> dict[str, int]:
    infos = hub.HfApi().get_paths_info(repo, names, token=token)
    return {info.path: info.size for info in infos if getattr(info, "size", None) is not None}


def _fetch_one(hub, item: HubFile, dest: Path, cache_dir: Path | None, token: str | None,
               expected_size: int | None) -> None:
    target = item.target(dest)
    if target.is_file() and expected_size is not None and target.stat().st_size == expected_size:
        return
    cached = Path(hub.hf_hub_download(item.repo, item.filename, cache_dir=cache_dir, token=token))
    size = cached.stat().st_size
    if expected_size is not None and size != expected_size:
        raise SonicWeightsError(f"{item.url}: downloaded {size} bytes, the hub says {expected_size}; "
                                "run fetch-weights again to resume")
    _place(cached, target)


def _failure(hub, item: HubFile, dest: Path, exc: Exception) -> str:
    where = f"{item.repo}/{item.filename} -> {item.target(dest)}"
    if isinstance(exc, hub.errors.GatedRepoError):
        return (f"{where}: gated repository; accept its licence at https://huggingface.co/{item.repo} and pass "
                "--token or set HF_TOKEN")
    if isinstance(exc, hub.errors.LocalEntryNotFoundError):
        return f"{where}: not in the hub cache and the hub is unreachable (offline); copy {item.url} there"
    if isinstance(exc, SonicWeightsError):
        return str(exc)
    return f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'failed'}"


def fetch_weights(dest: str | os.PathLike, *, token: str | None = None, progress: bool = True,
                  cache_dir: str | os.PathLike | None = None) -> WeightFiles:
    """Download every official file into ``dest`` (resumable; sizes checked against the hub when online).

    Offline (``HF_HUB_OFFLINE=1`` or no network) files are taken from the hub cache (``cache_dir``, default
    ``$HF_HUB_CACHE``). Every file that could not be had is listed in one :class:`SonicWeightsError` with the place
    to copy it to.
    """
    hub = _hub()
    dest = Path(dest).expanduser()
    token = token or os.environ.get("HF_TOKEN")
    cache = Path(cache_dir) if cache_dir is not None else None
    bars_were_off = hub.utils.are_progress_bars_disabled()
    if not progress:
        hub.utils.disable_progress_bars()
    failures: list[str] = []
    try:
        for repo in dict.fromkeys(item.repo for item in HUB_FILES):
            items = [item for item in HUB_FILES if item.repo == repo]
            try:
                sizes = {} if hub.constants.HF_HUB_OFFLINE else _remote_sizes(hub, repo, [i.filename for i in items],
                                                                               token)
            except Exception as exc:  # noqa: BLE001 - reported per file below, with the reason
                failures += [_failure(hub, item, dest, exc) for item in items]
                continue
            for item in items:
                try:
                    _fetch_one(hub, item, dest, cache, token, sizes.get(item.filename))
                except Exception as exc:  # noqa: BLE001 - every file's failure is collected into one message
                    failures.append(_failure(hub, item, dest, exc))
    finally:
        if not progress and not bars_were_off:
            hub.utils.enable_progress_bars()
    if failures:
        raise SonicWeightsError(f"fetch-weights got {len(HUB_FILES) - len(failures)} of {len(HUB_FILES)} files; "
                                + "; ".join(failures))
    return locate_weights(dest)
