"""Our VAE and CLIP image encoder built on tensors another owner holds (ComfyUI's loaded SVD): the very storages, the
same outputs, and one-line refusals for another architecture."""

import pytest
import torch
from sonic_testing import assert_one_line, perturb_

from sonic_core.errors import SonicWeightsError
from sonic_core.weights.shared import shared_bytes, shared_image_encoder, shared_vae
from sonic_core.weights.svd_single_file import VAE_RULES, to_stability
from sonic_core.weights.tiny import TINY_CONFIGS

BUILD = TINY_CONFIGS.factories()


def owner_vae() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A VAE and its first stage under the Stability names, as ComfyUI's VAE holds them (no quant_conv)."""
    vae = BUILD["vae"]().eval()
    perturb_(vae, seed=5)
    with torch.no_grad():
        vae.quant_conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))  # the identity the single file implies
        vae.quant_conv.bias.zero_()
    ours = {k: v.clone() for k, v in vae.state_dict().items() if not k.startswith("quant_conv.")}
    return vae, to_stability(ours, VAE_RULES)


def test_shared_vae_runs_on_the_owners_tensors():
    reference, tensors = owner_vae()
    vae = shared_vae(BUILD["vae"], tensors, "VAE input")
    shared, total = shared_bytes(vae, tensors.values())
    quant_conv = sum(p.numel() * p.element_size() for p in vae.quant_conv.parameters())
    assert shared == total - quant_conv and quant_conv < 1000  # only the identity 1x1 convolution is new
    assert shared_bytes(reference, tensors.values())[0] == 0  # the measure tells a copy
    image, latents = torch.randn(1, 3, 128, 128), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(vae.encode_mode(image), reference.encode_mode(image))
        assert torch.equal(vae.decode(latents, 2), reference.decode(latents, 2))


def test_shared_image_encoder_runs_on_the_owners_tensors():
    reference = BUILD["image_encoder"]().eval()
    perturb_(reference, seed=6)
    tensors = {k: v.clone() for k, v in reference.state_dict().items()}
    tensors["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # a buffer transformers saves
    encoder = shared_image_encoder(BUILD["image_encoder"], tensors, "CLIP_VISION input")
    assert shared_bytes(encoder, tensors.values()) == (total := shared_bytes(encoder, [])[1], total)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(pixels), reference(pixels))


def test_shared_parts_keep_the_owners_dtype():
    _, tensors = owner_vae()
    half = {k: v.half() for k, v in tensors.items()}
    vae = shared_vae(BUILD["vae"], half, "VAE input")
    assert {p.dtype for p in vae.parameters()} == {torch.float16}
    assert shared_bytes(vae, half.values())[0] > 0


def test_another_architecture_is_one_line_naming_the_input():
    _, tensors = owner_vae()
    sd15_like = {k: v for k, v in tensors.items() if ".time_stack." not in k and "time_mixer" not in k}
    with pytest.raises(SonicWeightsError) as vae_error:
        shared_vae(BUILD["vae"], sd15_like, "VAE input")
    assert_one_line(str(vae_error.value), "VAE input", "Image Only Checkpoint Loader")
    wide = {k: torch.zeros(*v.shape[:-1], v.shape[-1] * 2) if k == "visual_projection.weight" else v
            for k, v in BUILD["image_encoder"]().to_empty(device="cpu").state_dict().items()}
    with pytest.raises(SonicWeightsError) as clip_error:
        shared_image_encoder(BUILD["image_encoder"], wide, "CLIP_VISION input")
    assert_one_line(str(clip_error.value), "CLIP_VISION input", "visual_projection.weight", "ViT-H/14")


def test_an_owner_with_layers_in_another_precision_runs_layer_by_layer():
    reference = BUILD["image_encoder"]().eval()
    perturb_(reference, seed=7)
    fp32_layers = ("vision_model.pre_layrnorm.", "vision_model.post_layernorm.", "visual_projection.")  # ComfyUI's
    tensors = {k: v.clone() if k.startswith(fp32_layers) else v.half() for k, v in reference.state_dict().items()}
    encoder = shared_image_encoder(BUILD["image_encoder"], tensors, "CLIP_VISION input")
    assert {p.dtype for p in encoder.parameters()} == {torch.float16, torch.float32}
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        embeds = encoder(pixels)
        assert embeds.dtype == torch.float32
        torch.testing.assert_close(embeds, reference(pixels), atol=2e-3, rtol=2e-2)
