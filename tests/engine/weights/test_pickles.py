"""Torch pickles as training scripts save them load safely (numpy scalars and arrays, checkpoint dicts, DataParallel
prefixes), in both the zip and the legacy format; whole pickled models and code-carrying pickles are refused by
the name of their global, and their code never runs (each payload would create a marker file)."""

from __future__ import annotations

import builtins
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sonic_core.errors import SonicWeightsError
from sonic_core.weights import read_state_dict

FORMATS = {"zip": True, "legacy": False}


def save(obj: object, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).state_dict()


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture(params=sorted(FORMATS))
def fmt(request) -> str:
    return request.param


@pytest.mark.parametrize("entry", ["state_dict", "model_state_dict", "model", "module"])
def test_training_checkpoint_with_numpy_fields(tmp_path, fmt, entry):
    sd = small_state()
    checkpoint = {entry: sd, "epoch": np.int64(3), "best_loss": np.float32(0.25), "step": 1200,
                  "history": np.arange(5, dtype=np.float64),
                  "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]}}
    assert_same(read_state_dict(save(checkpoint, tmp_path / "ckpt.pth", fmt)), sd)


def test_numpy_arrays_become_tensors(tmp_path, fmt):
    sd = small_state()
    arrays = {k: v.numpy() for k, v in sd.items()} | {"scale": np.float32(2.0)}
    got = read_state_dict(save(arrays, tmp_path / "np.pkl", fmt))
    assert_same({k: got[k] for k in sd}, sd)
    assert got["scale"].dtype == torch.float32 and got["scale"].item() == 2.0


def test_data_parallel_prefix_is_dropped(tmp_path, fmt):
    sd = small_state()
    got = read_state_dict(save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": np.int64(1)},
                               tmp_path / "dp.pth", fmt))
    assert_same(got, sd)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize("model, cls", [(Net(), "test_pickles.Net"),
                                        (nn.Sequential(nn.Linear(2, 2)), "torch.nn.modules.container.Sequential")])
def test_a_whole_pickled_model_is_refused_by_name(tmp_path, fmt, model, cls):
    with pytest.raises(SonicWeightsError) as err:
        read_state_dict(save(model, tmp_path / "model.pth", fmt))
    message = str(err.value)
    assert "\n" not in message and "model.pth holds a pickled nn.Module" in message
    assert f"class {cls}" in message and "save its state_dict() instead" in message


class Payload:
    """Unpickling this calls ``function(*args)``: what a malicious checkpoint does."""

    def __init__(self, function, *args) -> None:
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def payloads(marker: Path) -> dict[str, tuple[Payload, str]]:
    return {
        "os.system": (Payload(os.system, f"touch {marker}"), os.system.__module__ + ".system"),
        "builtins.eval": (Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
        "builtins.exec": (Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        "subprocess.Popen": (Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "pathlib.Path.touch": (Payload(Path.touch, marker), "builtins.getattr"),  # a method pickles as getattr(cls, name)
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen",
                                  "pathlib.Path.touch"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_code_carrying_pickles_are_refused_without_running(tmp_path, fmt, name, wrapped):
    marker = tmp_path / "code_ran"
    payload, global_name = payloads(marker)[name]
    obj = {"state_dict": small_state(), "extra": payload} if wrapped else payload
    path = save(obj, tmp_path / "evil.pth", fmt)
    assert not marker.exists()
    with pytest.raises(SonicWeightsError) as err:
        read_state_dict(path)
    assert not marker.exists(), "the pickle's code ran"
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"references {global_name}, which is code, not data" in message and "nothing was run" in message
