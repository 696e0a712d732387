"""CLIP vision tower: parity with transformers (test-only reference) on tiny configs, full-size keys, loading and
the image preprocessing of MODEL.md §3.4."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from sonic_testing import REPO, checkpoint_key_list, max_rel, perturb_, state_dict_rows

from sonic_core.errors import SonicInputError, SonicWeightsError
from sonic_core.models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection, preprocess_clip_image
from sonic_core.weights.components import load_clip_vision

TOLERANCE = 1e-4
TINY_CONFIGS = {
    "golden-like": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8, projection_dim=24),
    "quick-gelu": dict(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=2,
                       image_size=28, patch_size=14, projection_dim=16, hidden_act="quick_gelu"),
    "deep-narrow": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=6,
                        image_size=24, patch_size=4, projection_dim=40, layer_norm_eps=1e-6),
}


def reference(config: dict, seed: int):
    import transformers
    torch.manual_seed(seed)
    ref = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**config)).eval()
    perturb_(ref, seed)
    return ref


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_image_embeds_match_transformers(name: str, record_property) -> None:
    config = TINY_CONFIGS[name]
    ref = reference(config, seed=len(name))
    ours = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict({**config, "model_type": "clip_vision_model"}))
    load_clip_vision(ours.eval(), ref.state_dict())
    pixels = torch.randn(3, 3, config["image_size"], config["image_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(pixels), ref(pixel_values=pixels).image_embeds
    rel = max_rel(got, want)
    record_property("max_rel", rel)
    print(f"CLIP {name}: max_rel={rel:.3e}")
    assert rel <= TOLERANCE


def test_full_size_keys_on_meta() -> None:
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection()
    got = state_dict_rows(model)
    assert got == checkpoint_key_list("clip_vision")
    assert len(got) == 520
    assert sum(p.numel() for p in model.parameters()) == 632_076_800
    assert model.config == CLIPVisionConfig.vit_h14()


def test_loader_drops_stray_position_ids_and_rejects_other_checkpoints() -> None:
    config = CLIPVisionConfig.from_dict(TINY_CONFIGS["golden-like"])
    source = CLIPVisionModelWithProjection(config)
    state = {**source.state_dict(), "vision_model.embeddings.position_ids": torch.arange(17)[None]}
    target = CLIPVisionModelWithProjection(config)
    load_clip_vision(target, state)
    assert torch.equal(target.visual_projection.weight, source.visual_projection.weight)
    del state["visual_projection.weight"]
    with pytest.raises(SonicWeightsError, match="1 missing .*visual_projection.weight"):
        load_clip_vision(target, state, "clip.safetensors")


def test_wrong_image_size_is_an_input_error() -> None:
    model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(TINY_CONFIGS["golden-like"]))
    with pytest.raises(SonicInputError, match=r"expected \[B, 3, 32, 32\]"):
        model(torch.zeros(1, 3, 224, 224))


def test_preprocess_matches_clip_image_processor() -> None:
    """MODEL.md §3.4: a LANCZOS squash of the (non-square) working image, then CLIPImageProcessor's defaults."""
    import transformers
    image = Image.open(REPO / "sonic_core" / "assets" / "portrait.jpg").resize((448, 320), Image.LANCZOS)
    got = preprocess_clip_image(image)
    squashed = image.resize((224, 224), Image.LANCZOS)
    want = transformers.CLIPImageProcessor()(squashed, return_tensors="pt").pixel_values[0]
    assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
    assert (got - want).abs().max().item() <= 1e-6
    assert preprocess_clip_image(image.convert("L"), size=32).shape == (3, 32, 32)


def test_config_defaults_are_transformers_defaults() -> None:
    """A config dict that omits a field must build the same network as transformers would."""
    import transformers
    assert CLIPVisionConfig() == CLIPVisionConfig.from_dict(transformers.CLIPVisionConfig().to_dict())


def test_fresh_model_is_deterministic_under_a_seed() -> None:
    """Every parameter is initialised from the RNG (no uninitialised memory): two builds under one seed agree."""
    config = CLIPVisionConfig.from_dict({"hidden_size": 32, "intermediate_size": 64, "projection_dim": 16,
                                         "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16,
                                         "patch_size": 8})
    builds = []
    for _ in range(2):
        torch.manual_seed(0)
        builds.append(CLIPVisionModelWithProjection(config).state_dict())
    for key, value in builds[0].items():
        assert torch.isfinite(value).all(), key
        assert torch.equal(value, builds[1][key]), key
