"""Helpers shared by the tests (import them as ``from sonic_testing import ...``; conftest.py files only hold
fixtures, since several of them exist). The repo root is on sys.path (pytest.ini's pythonpath), so
``import sonic_core`` works."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
KEYS = REPO / "tests" / "data" / "keys"  # the published checkpoints' key lists


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


def checkpoint_key_list(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of ``tests/data/keys/NAME.tsv``, the published checkpoint's key list in order."""
    rows = (KEYS / f"{name}.tsv").read_text().splitlines()[1:]
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


# -- graph pricing: a stand-in audio folder and the basic template as an API prompt ------------------------------

AUDIO_SECONDS = {"speech.wav": 6.6, "long.wav": 61.0}


def seconds_of(name: str) -> float:
    if name not in AUDIO_SECONDS:
        raise FileNotFoundError(name)
    return AUDIO_SECONDS[name]


def basic_prompt(duration=0.0, resolution=512, steps=20, dynamic=1.0, motion=1.0, audio="speech.wav") -> dict:
    """Load Image + LoadAudio -> SonicPreData -> SonicSampler, as the UI's graphToPrompt exports it."""
    return {
        "1": {"class_type": "SonicLoader", "inputs": {"weights": "demo (tiny, untrained)", "dtype": "fp32",
                                                       "device": "cpu"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "4": {"class_type": "SonicPreData", "inputs": {"image": ["2", 0], "audio": ["3", 0], "duration": duration,
                                                        "min_resolution": resolution, "expand_ratio": "auto"}},
        "5": {"class_type": "SonicSampler", "inputs": {"model": ["1", 0], "predata": ["4", 0], "steps": steps,
                                                        "dynamic_scale": dynamic, "motion_scale": motion,
                                                        "seed": 1, "audio_guidance": 7.5,
                                                        "appearance_guidance": 2.0, "fps": 25.0}},
    }
