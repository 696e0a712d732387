"""``python -m sonic_core weights convert|check`` on weights trees written in the official layout (tiny configs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from sonic_testing import write_official_layout

from sonic_core.cli import main
from sonic_core.models.bundle import SonicModels
from sonic_core.models.rife import IFNet
from sonic_core.weights import locate_weights
from sonic_core.weights.loader import load_sonic_models
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
