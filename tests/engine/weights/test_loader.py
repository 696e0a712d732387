"""load_sonic_models: the full-size networks cover the published key lists (built on the meta device), a weights
tree written in the official layout loads end to end (tiny configs), precisions follow MODEL.md §2, and missing files
give one line naming every absent component."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from sonic_testing import checkpoint_key_list, write_official_layout

from sonic_core.errors import SonicWeightsError
from sonic_core.models.bundle import ModelConfigs, SonicModels
from sonic_core.models.rife import IFNet
from sonic_core.weights import locate_weights
from sonic_core.weights.loader import load_sonic_models, required_components
from sonic_core.weights.tiny import TINY_CONFIGS, tiny_models

KEY_LISTS = {"unet": "unet", "vae": "vae_temporal", "image_encoder": "clip_vision",
             "whisper": "whisper_tiny_encoder", "audio2token": "audio2token", "audio2bucket": "audio2bucket",
             "rife": "rife_flownet"}
# how the published files name what our modules call the same tensor (the readers undo these)
PUBLISHED_ONLY = {"vision_model.embeddings.position_ids"}
PUBLISHED_PREFIX = {"rife": "module."}


@pytest.mark.parametrize("component", sorted(KEY_LISTS))
def test_full_size_networks_match_the_published_key_lists(component):
    with torch.device("meta"):
        model = ModelConfigs.official().factories()[component]()
    prefix = PUBLISHED_PREFIX.get(component, "")
    published = {key.removeprefix(prefix): shape for key, shape, _ in checkpoint_key_list(KEY_LISTS[component])
                 if key not in PUBLISHED_ONLY}
    ours = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert ours == published
    assert not [name for name, _ in model.named_buffers() if name not in ours], "unsaved buffers cannot be assigned"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, SonicModels]:
    torch.manual_seed(3)
    models = tiny_models(seed=5, rife=IFNet())
    root = tmp_path_factory.mktemp("weights")
    write_official_layout(root, models)
    return root, models


def test_official_layout_loads_strictly_with_spec_precisions(saved):
    root, source = saved
    loaded = load_sonic_models(locate_weights(root), dtype="fp16", configs=TINY_CONFIGS)
    for name in ("unet", "vae", "image_encoder"):
        for key, tensor in getattr(loaded, name).state_dict().items():
            assert tensor.dtype == torch.float16, (name, key)
            assert torch.equal(tensor, getattr(source, name).state_dict()[key].half()), (name, key)
    for name in ("whisper", "audio2token", "audio2bucket", "rife"):
        for key, tensor in getattr(loaded, name).state_dict().items():
            assert tensor.dtype == torch.float32, (name, key)
            assert torch.equal(tensor, getattr(source, name).state_dict()[key]), (name, key)
    assert not any(p.requires_grad for p in loaded.unet.parameters())
    assert not loaded.unet.training


def test_without_interpolation_rife_is_neither_needed_nor_loaded(saved):
    root, _ = saved
    files = dataclasses.replace(locate_weights(root), rife=None)
    assert required_components(interpolate=False) == tuple(c for c in required_components(True) if c != "rife")
    loaded = load_sonic_models(files, dtype="fp32", interpolate=False, configs=TINY_CONFIGS)
    assert loaded.rife is None
    with pytest.raises(SonicWeightsError, match=r"missing Sonic weights: rife -> "):
        load_sonic_models(files, dtype="fp32", configs=TINY_CONFIGS)


def test_missing_files_are_one_line_naming_each_component(tmp_path):
    with pytest.raises(SonicWeightsError) as info:
        load_sonic_models(locate_weights(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "fetch-weights" in message
    for component in required_components(interpolate=True):
        assert f"{component} -> " in message


def test_a_checkpoint_of_the_wrong_architecture_names_the_file(saved, tmp_path):
    root, source = saved
    bad = tmp_path / "bad"
    write_official_layout(bad, source)
    torch.save(source.audio2bucket.state_dict(), bad / "Sonic" / "audio2token.pth")
    with pytest.raises(SonicWeightsError, match=r"audio2token\.pth does not match AudioProjModel"):
        load_sonic_models(locate_weights(bad), dtype="fp32", configs=TINY_CONFIGS)
