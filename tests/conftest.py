"""Shared fixtures. The repo root is on sys.path (pyproject's pythonpath), so ``import sonic_core`` works."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from comfyui_harness import comfyui_browser, comfyui_server, comfyui_server_v1  # noqa: F401  (fixtures of the real-ComfyUI tests)

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def golden_dir() -> Path:
    """Fixture set of the golden parity tests: $SONIC_GOLDEN_DIR, default ../shared/sonic/golden."""
    return Path(os.environ.get("SONIC_GOLDEN_DIR", REPO.parent / "shared" / "sonic" / "golden"))


def golden_manifest() -> list[dict]:
    """The fixtures listed in the golden manifest (empty when the set is absent)."""
    manifest = golden_dir() / "manifest.json"
    if not manifest.is_file():
        return []
    return json.loads(manifest.read_text())["fixtures"]


def load_pack(name: str = "sonic_pack") -> ModuleType:
    """Import the repo root as a package the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m sonic_core ARGS`` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sonic_core", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def checkpoint_key_list(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of ``tests/data/keys/NAME.tsv``, the published checkpoint's key list in order."""
    rows = (REPO / "tests" / "data" / "keys" / f"{name}.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        key, shape, _numel, dtype = row.split("\t")
        out.append((key, tuple(int(s) for s in shape.split(",") if s), dtype))
    return out


def state_dict_rows(module) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of ``module.state_dict()``, comparable with :func:`checkpoint_key_list`."""
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


def max_rel(got, want) -> float:
    """The parity metric of the goldens: ``max|got − want| / max|want|`` in float64."""
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = want.abs().max().item()
    err = (got.double() - want.double()).abs().max().item()
    return err / scale if scale else err


def perturb_(module, seed: int, std: float = 0.05) -> None:
    """Add N(0, std²) noise to every floating tensor of ``module``'s state dict, as the golden fixtures do, so that
    no weight keeps a structured initial value (zero biases, unit LayerNorm gains) that could hide a wiring error."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * std)


def write_official_layout(root: Path, models) -> None:
    """``models`` (:class:`sonic_core.models.bundle.SonicModels`) saved the way the published files are: Sonic
    .pth pickles under Sonic/, whisper-tiny as a WhisperForConditionalGeneration safetensors, SVD as a diffusers
    folder with fp16 variants, RIFE with the DataParallel ``module.`` prefix."""
    import torch
    from safetensors.torch import save_file

    (root / "Sonic").mkdir(parents=True)
    for name in ("unet", "audio2token", "audio2bucket"):
        torch.save(getattr(models, name).state_dict(), root / "Sonic" / f"{name}.pth")
    (root / "whisper-tiny").mkdir()
    whisper = {"model." + k: v.contiguous() for k, v in models.whisper.state_dict().items()}
    whisper["model.decoder.embed_tokens.weight"] = torch.zeros(4, 2)
    save_file(whisper, root / "whisper-tiny" / "model.safetensors")
    svd = root / "stable-video-diffusion-img2vid-xt"
    (svd / "vae").mkdir(parents=True)
    (svd / "image_encoder").mkdir()
    save_file({k: v.half().contiguous() for k, v in models.vae.state_dict().items()},
              svd / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    clip = {k: v.half().contiguous() for k, v in models.image_encoder.state_dict().items()}
    clip["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(clip, svd / "image_encoder" / "model.fp16.safetensors")
    (root / "RIFE").mkdir()
    torch.save({"module." + k: v for k, v in models.rife.state_dict().items()}, root / "RIFE" / "flownet.pkl")
