"""``python -m sonic_core weights convert|check`` on weights trees written in the official layout (tiny configs)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sonic_testing import write_official_layout

from sonic_core.cli import main
from sonic_core.models.bundle import SonicModels
from sonic_core.models.rife import IFNet
from sonic_core.weights import locate_weights
from sonic_core.weights.loader import load_sonic_models
from sonic_core.weights.svd_single_file import CLIP_PREFIX, CLIP_RULES, VAE_PREFIX, VAE_RULES, to_stability
from sonic_core.weights.tiny import TINY_CONFIGS, tiny_models

PICKLES = ("Sonic/unet", "Sonic/audio2token", "Sonic/audio2bucket", "RIFE/flownet")


@pytest.fixture(scope="module")
def models() -> SonicModels:
    torch.manual_seed(3)
    return tiny_models(seed=5, rife=IFNet())


def official_tree(root: Path, models: SonicModels) -> Path:
    write_official_layout(root, models)
    return root


def test_convert_writes_safetensors_that_the_loader_prefers(tmp_path, models, capsys):
    root = official_tree(tmp_path / "w", models)
    assert main(["weights", "convert", str(root)]) == 0
    out = capsys.readouterr().out
    for stem in PICKLES:
        suffix = ".pkl" if stem.startswith("RIFE") else ".pth"
        assert f"converted {root / (stem + suffix)} -> {root / (stem + '.safetensors')}" in out
    assert not list(root.rglob("*.partial"))
    files = locate_weights(root)
    assert files.unet == root / "Sonic" / "unet.safetensors" and files.rife == root / "RIFE" / "flownet.safetensors"
    loaded = load_sonic_models(files, dtype="fp32", configs=TINY_CONFIGS)
    for name in ("unet", "audio2token", "audio2bucket", "rife"):
        want = getattr(models, name).state_dict()
        got = getattr(loaded, name).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, for a TorchScript file like yoloface's
def test_convert_refuses_what_the_reader_refuses_and_leaves_no_file(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, tmp_path / "evil.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "good.pkl", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "detector.pth")
    assert main(["weights", "convert", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"skipped: {tmp_path / 'evil.pth'} references {os.system.__module__}.system, which is code" in out
    assert f"skipped: {tmp_path / 'detector.pth'} is a TorchScript archive" in out
    assert f"converted {tmp_path / 'good.pkl'} -> {tmp_path / 'good.safetensors'}" in out
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.pth", "evil.pth", "good.pkl", "good.safetensors"]
    assert main(["weights", "convert", str(tmp_path / "evil.pth")]) == 2 and not marker.exists()
    assert main(["weights", "convert", str(tmp_path / "absent")]) == 2
    assert "absent not found" in capsys.readouterr().err


def check(*args: str, capsys) -> tuple[int, str]:
    code = main(["weights", "check", *args])
    return code, capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, for the TorchScript face detector
def test_check_a_complete_tree(tmp_path, models, capsys):
    root = official_tree(tmp_path / "w", models)
    code, out = check(str(root), "--model", "tiny", capsys=capsys)
    assert code == 0 and out.splitlines()[-1] == "complete: every required file is present and loads"
    assert "yoloface" in out and "absent  (optional" in out
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), root / "yoloface_v5m.pt")
    code, out = check(str(root), "--model", "tiny", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["missing"] == {} and report["model"] == "tiny"
    by_component = {f["component"]: f for f in report["files"]}
    assert set(by_component) == {"unet", "audio2token", "audio2bucket", "rife", "whisper", "svd.vae",
                                 "svd.image_encoder", "yoloface"}
    assert by_component["yoloface"]["format"] == "TorchScript" and by_component["yoloface"]["loads"]
    unet = by_component["unet"]
    assert unet["format"] == "torch zip" and unet["dtypes"] == ["float32"] and unet["loads"]
    assert unet["sha256"] == hashlib.sha256((root / "Sonic" / "unet.pth").read_bytes()).hexdigest()
    assert unet["size"] == (root / "Sonic" / "unet.pth").stat().st_size
    assert by_component["svd.vae"]["format"] == "safetensors" and by_component["svd.vae"]["dtypes"] == ["float16"]


def test_check_against_the_published_sizes_by_default(tmp_path, models, capsys):
    root = official_tree(tmp_path / "w", models)
    code, out = check(str(root), capsys=capsys)
    assert code == 2 and "checked against the sonic model" in out
    assert out.count("FAIL") == 6 and "does not match SonicUNet" in out
    assert re.search(r"rife +ok ", out)  # RIFE has one size


def test_check_says_what_is_missing_or_wrong(tmp_path, models, capsys):
    root = official_tree(tmp_path / "w", models)
    (root / "Sonic" / "audio2bucket.pth").unlink()
    torch.save(models.audio2token.state_dict(), root / "Sonic" / "unet.pth")  # the wrong network
    flownet = {"module." + k: v for k, v in models.rife.state_dict().items()}
    torch.save(flownet, root / "RIFE" / "flownet.pkl", _use_new_zipfile_serialization=False)
    svd = root / "stable-video-diffusion-img2vid-xt"
    (svd / "vae" / "diffusion_pytorch_model.fp16.safetensors").rename(svd.parent / "vae.safetensors")
    code, out = check(str(root), "--model", "tiny", capsys=capsys)
    assert code == 2
    assert f"audio2bucket       MISSING  put it at {root / 'Sonic' / 'audio2bucket.pth'}" in out
    assert re.search(r"unet +FAIL +.*unet\.pth\n.*\n +.*unet\.pth does not match SonicUNet", out)
    assert re.search(r"rife +ok +.*flownet\.pkl\n +legacy pickle, float32", out)
    assert "svd.vae            FAIL" in out and "has neither diffusion_pytorch_model.fp16.safetensors" in out
    assert out.splitlines()[-1] == "incomplete: missing audio2bucket; does not load: unet, svd.vae"


def test_check_a_comfy_tree_with_the_svd_single_file_in_a_subfolder(tmp_path, models, capsys):
    root = official_tree(tmp_path / "w", models)
    comfy = tmp_path / "ComfyUI" / "models"
    shutil.move(root / "Sonic", comfy / "sonic")  # the flat ComfyUI layout: models/sonic/unet.pth
    shutil.rmtree(root / "stable-video-diffusion-img2vid-xt")
    vae = {k: v for k, v in models.vae.state_dict().items() if not k.startswith("quant_conv.")}
    tensors = {VAE_PREFIX + k: v for k, v in to_stability(vae, VAE_RULES).items()}
    tensors |= {CLIP_PREFIX + k: v for k, v in to_stability(models.image_encoder.state_dict(), CLIP_RULES).items()}
    (comfy / "checkpoints" / "video").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, comfy / "checkpoints" / "video" / "svd_xt.safetensors")
    image_decoder = {k: v for k, v in tensors.items() if ".time_stack." not in k and "time_mix" not in k}
    save_file({k: v.contiguous() for k, v in image_decoder.items()},
              comfy / "checkpoints" / "svd_xt_image_decoder.safetensors")
    code, out = check(str(root), "--comfy-models", str(comfy), "--model", "tiny", capsys=capsys)
    assert code == 0, out
    assert re.search(rf"svd +ok +{re.escape(str(comfy / 'checkpoints' / 'video' / 'svd_xt.safetensors'))}\n", out)
    assert f"not used: svd: {comfy / 'checkpoints' / 'svd_xt_image_decoder.safetensors'} (its VAE has no temporal" in out
    assert re.search(rf"unet +ok +{re.escape(str(comfy / 'sonic' / 'unet.pth'))}\n", out)
