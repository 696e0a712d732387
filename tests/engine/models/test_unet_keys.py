"""Full-size key coverage: our UNet and audio adapters, built on the meta device (no memory), have exactly the
state-dict keys, shapes and order of the published checkpoints (``tests/data/keys/*.tsv``)."""

from __future__ import annotations

import pytest
import torch
from sonic_testing import checkpoint_key_list

from sonic_core.models.audio_adapters import Audio2BucketModel, AudioProjModel
from sonic_core.models.unet import SonicUNet

BUILDERS = {"unet": SonicUNet.svd, "audio2token": AudioProjModel, "audio2bucket": Audio2BucketModel}
PARAMS = {"unet": 1_575_741_162, "audio2token": 54_300_672, "audio2bucket": 21_762_050}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    with torch.device("meta"):
        return {name: build() for name, build in BUILDERS.items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_state_dict_equals_checkpointcheckpoint_key_list(models, name: str) -> None:
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in models[name].state_dict().items()]
    want = checkpoint_key_list(name)
    assert {k for k, *_ in got} == {k for k, *_ in want}
    assert got == want


@pytest.mark.parametrize("name", list(BUILDERS))
def test_parameter_count(models, name: str) -> None:
    assert sum(p.numel() for p in models[name].state_dict().values()) == PARAMS[name]
    assert sum(p.numel() for p in models[name].parameters()) == PARAMS[name]


def test_audio_branch_keys(models) -> None:
    state = models["unet"].state_dict()
    ip = {k: v for k, v in state.items() if ".to_k_ip." in k or ".to_v_ip." in k}
    assert len(ip) == 64
    assert sum(v.numel() for v in ip.values()) == 51_118_080
    assert all(k.endswith(("attn2.processor.to_k_ip.0.weight", "attn2.processor.to_v_ip.0.weight")) for k in ip)
    spatial = [k for k in ip if ".transformer_blocks.0." in k]
    temporal = [k for k in ip if ".temporal_transformer_blocks.0." in k]
    assert len(spatial) == len(temporal) == 32
