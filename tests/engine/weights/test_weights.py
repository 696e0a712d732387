"""Weight files: layouts, safe reading and its errors, meta-device loading, the SVD single-file renames, whisper and
RIFE key handling, and fetch-weights against a local hub cache (no network)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sonic_testing import checkpoint_key_list, svd_header_file
from torch import nn

from sonic_core.cli.fetch_weights import add_fetch_weights_parser
from sonic_core.errors import SonicDependencyError, SonicInputError, SonicWeightsError
from sonic_core.models.audio_adapters import AudioProjModel
from sonic_core.models.vae import TemporalVAE, VAEConfig
from sonic_core.weights import (HUB_FILES, build_and_load, fetch_weights, load_svd_parts, locate_weights, read_rife,
                                read_state_dict, read_unet, read_whisper_encoder, rife_state_dict,
                                whisper_encoder_state_dict)
from sonic_core.weights.svd_single_file import (CLIP_PREFIX, CLIP_RULES, VAE_PREFIX, VAE_RULES, from_stability,
                                                to_stability)

TINY_ADAPTER = dict(seq_len=2, blocks=2, channels=4, intermediate_dim=8, output_dim=6, context_tokens=3)


def tsv_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {key: shape for key, shape, _dtype in checkpoint_key_list(name)}


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tiny_adapter_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return AudioProjModel(**TINY_ADAPTER).state_dict()


# ---------------------------------------------------------------------------------------------------------- layout

def comfy_tree(models: Path) -> None:
    for name in ("unet.pth", "audio2token.pth", "audio2bucket.pth", "yoloface_v5m.pt", "RIFE/flownet.pkl",
                 "whisper-tiny/model.safetensors", "whisper-tiny/config.json"):
        touch(models / "sonic" / name)
    svd_header_file(models / "checkpoints" / "svd_xt_1_1.safetensors")
    svd_header_file(models / "checkpoints" / "svd_xt.safetensors")


def test_comfy_layout(tmp_path):
    comfy_tree(tmp_path / "models")
    files = locate_weights(tmp_path / "empty", tmp_path / "models").require("unet", "yoloface", "rife")
    sonic = tmp_path / "models" / "sonic"
    assert (files.unet, files.audio2token, files.audio2bucket) == (sonic / "unet.pth", sonic / "audio2token.pth",
                                                                   sonic / "audio2bucket.pth")
    assert files.yoloface == sonic / "yoloface_v5m.pt" and files.rife == sonic / "RIFE" / "flownet.pkl"
    assert files.whisper == sonic / "whisper-tiny"
    assert files.svd == tmp_path / "models" / "checkpoints" / "svd_xt.safetensors" and files.svd_kind == "file"
    assert [(r.path.name, r.reason) for r in files.rejected] == [
        ("svd_xt_1_1.safetensors", f"another SVD checkpoint; {files.svd} is used")]


def test_the_svd_file_is_chosen_by_its_keys_anywhere_below_checkpoints(tmp_path):
    checkpoints = tmp_path / "models" / "checkpoints"
    svd_header_file(checkpoints / "svd_xt_image_decoder.safetensors", temporal=False)
    svd_header_file(checkpoints / "sd15.safetensors", temporal=False, clip=False)  # an image model: not reported
    touch(checkpoints / "svd_broken.safetensors", b"garbage")
    only_rejects = locate_weights(tmp_path / "empty", tmp_path / "models")
    assert only_rejects.svd is None and [(r.path.name, r.component) for r in only_rejects.rejected] == [
        ("svd_broken.safetensors", "svd"), ("svd_xt_image_decoder.safetensors", "svd")]
    with pytest.raises(SonicWeightsError) as err:
        only_rejects.require("svd")
    message = str(err.value)
    assert "\n" not in message and "svd -> " in message and "sd15" not in message
    assert "svd_xt_image_decoder.safetensors (its VAE has no temporal decoder" in message
    assert "svd_broken.safetensors (unreadable: " in message
    renamed = svd_header_file(checkpoints / "video" / "my video model.safetensors")
    files = locate_weights(tmp_path / "empty", tmp_path / "models")
    assert files.svd == renamed and files.svd_kind == "file" and files.explain("svd") == ""


def test_standalone_official_layout_with_sonic_subfolder_and_diffusers_svd(tmp_path, monkeypatch):
    root = tmp_path / "weights"
    for name in ("Sonic/unet.pth", "Sonic/audio2token.pth", "Sonic/audio2bucket.pth", "RIFE/flownet.pkl",
                 "whisper-tiny/model.safetensors"):
        touch(root / name)
    (root / "stable-video-diffusion-img2vid-xt" / "vae").mkdir(parents=True)
    (root / "stable-video-diffusion-img2vid-xt" / "image_encoder").mkdir()
    monkeypatch.setenv("SONIC_WEIGHTS", str(root))
    files = locate_weights().require()
    assert files.unet == root / "Sonic" / "unet.pth" and files.rife == root / "RIFE" / "flownet.pkl"
    assert files.svd == root / "stable-video-diffusion-img2vid-xt" and files.svd_kind == "folder"
    assert files.yoloface is None and files.missing("yoloface") == ["yoloface"]


def test_comfy_first_then_standalone_fills_gaps(tmp_path):
    touch(tmp_path / "models" / "sonic" / "unet.pth")
    touch(tmp_path / "w" / "unet.pth")
    touch(tmp_path / "w" / "audio2token.pth")
    files = locate_weights(tmp_path / "w", tmp_path / "models")
    assert files.unet == tmp_path / "models" / "sonic" / "unet.pth"
    assert files.audio2token == tmp_path / "w" / "audio2token.pth"


def test_require_lists_every_missing_file_once(tmp_path):
    touch(tmp_path / "models" / "sonic" / "unet.pth")
    files = locate_weights(tmp_path / "w", tmp_path / "models")
    with pytest.raises(SonicWeightsError) as err:
        files.require()
    message = str(err.value)
    assert "\n" not in message and "python -m sonic_core fetch-weights" in message
    for component in ("audio2token", "audio2bucket", "whisper", "svd"):
        assert f"{component} -> " in message
    assert "unet ->" not in message and "rife" not in message and "yoloface" not in message  # found / optional
    assert str(tmp_path / "models" / "sonic" / "Sonic" / "audio2token.pth") in message
    assert str(tmp_path / "models" / "checkpoints" / "svd_xt.safetensors") in message
    with pytest.raises(SonicWeightsError, match=r"rife -> .*RIFE/flownet\.pkl"):
        files.require("rife")
    with pytest.raises(ValueError, match="unknown weight component"):
        files.require("vae")


# --------------------------------------------------------------------------------------------------------- reading

class CodeInPickle:
    """Unpickling this runs ``Path.touch(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_read_errors_are_one_line_and_name_the_file(tmp_path):
    sd = tiny_adapter_state()
    torch.save(sd, tmp_path / "good.pth")
    full = (tmp_path / "good.pth").read_bytes()
    torch.save(sd, tmp_path / "legacy.pkl", _use_new_zipfile_serialization=False)
    save_file(sd, tmp_path / "good.safetensors")
    cases = {
        "absent.pth": (None, "not found"),
        "empty.pth": (b"", "is empty"),
        "cut.pth": (full[: len(full) // 2], "truncated"),
        "cut.pkl": ((tmp_path / "legacy.pkl").read_bytes()[:-200], "truncated"),
        "cut.safetensors": ((tmp_path / "good.safetensors").read_bytes()[:-10], "truncated"),
    }
    for name, (data, words) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(SonicWeightsError, match=words) as err:
            read_state_dict(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value) and "fetch-weights" in str(err.value)


def test_unsafe_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"w": torch.zeros(2), "payload": CodeInPickle(marker)}, tmp_path / "evil.pth")
    with pytest.raises(SonicWeightsError, match="references builtins.getattr, which is code, not data: loading it was refused to execute code, "
                                                "and nothing was run; get the official file"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [[torch.zeros(1)], torch.zeros(3), {"epoch": 3}, {1: torch.zeros(1)}])
def test_not_a_state_dict(tmp_path, payload):
    torch.save(payload, tmp_path / "odd.pth")
    with pytest.raises(SonicWeightsError, match="not a state dict"):
        read_state_dict(tmp_path / "odd.pth")


def test_legacy_pickle_and_safetensors_subset(tmp_path):
    sd = tiny_adapter_state()
    torch.save(sd, tmp_path / "legacy.pkl", _use_new_zipfile_serialization=False)
    assert all(torch.equal(read_state_dict(tmp_path / "legacy.pkl")[k], v) for k, v in sd.items())
    save_file(sd, tmp_path / "a.safetensors")
    subset = read_state_dict(tmp_path / "a.safetensors", keys=["norm.weight"])
    assert list(subset) == ["norm.weight"] and torch.equal(subset["norm.weight"], sd["norm.weight"])
    with pytest.raises(SonicWeightsError, match="lacks 1 expected tensor"):
        read_state_dict(tmp_path / "a.safetensors", keys=["norm.weight", "proj9.weight"])


# -------------------------------------------------------------------------------------------------- build_and_load

def test_build_and_load_assigns_the_mmapped_tensors(tmp_path):
    sd = tiny_adapter_state(1)
    torch.save(sd, tmp_path / "audio2token.pth")
    loaded = read_state_dict(tmp_path / "audio2token.pth")
    model = build_and_load(lambda: AudioProjModel(**TINY_ADAPTER), loaded, source="audio2token.pth")
    params = dict(model.named_parameters())
    # No second copy: every parameter is the tensor read from the file (same memory).
    assert all(params[k].data_ptr() == loaded[k].data_ptr() for k in loaded)
    assert not model.training and not any(p.requires_grad for p in params.values())
    reference = AudioProjModel(**TINY_ADAPTER)
    reference.load_state_dict(sd)
    x = torch.randn(2, 3, 2, 2, 4)
    assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32"])
def test_build_and_load_casts_floating_tensors(tmp_path, name):
    sd = {k: v.half() for k, v in tiny_adapter_state(2).items()}
    save_file(sd, tmp_path / "a.safetensors")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
    model = build_and_load(lambda: AudioProjModel(**TINY_ADAPTER), read_state_dict(tmp_path / "a.safetensors"),
                           dtype=name, source="a.safetensors")
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert all(torch.equal(model.state_dict()[k], v.to(dtype)) for k, v in sd.items())
    kept = build_and_load(lambda: AudioProjModel(**TINY_ADAPTER), sd, source="a.safetensors")
    assert {p.dtype for p in kept.parameters()} == {torch.float16}  # no dtype asked: the file's dtype
    with pytest.raises(SonicInputError, match="fp64"):
        build_and_load(lambda: AudioProjModel(**TINY_ADAPTER), sd, dtype="fp64", source="a.safetensors")


def test_build_and_load_wrong_keys_and_shapes():
    sd = tiny_adapter_state()
    factory = lambda: AudioProjModel(**TINY_ADAPTER)  # noqa: E731
    for bad, words in (({k: v for k, v in sd.items() if k != "proj3.bias"}, "1 missing"),
                       ({**sd, "proj4.weight": torch.zeros(1)}, "1 unexpected"),
                       ({**sd, "norm.weight": torch.zeros(7)}, "1 of the wrong shape")):
        with pytest.raises(SonicWeightsError, match=words) as err:
            build_and_load(factory, bad, source="audio2token.pth", fix="get the official audio2token.pth")
        assert "audio2token.pth does not match AudioProjModel" in str(err.value)
        assert str(err.value).endswith("get the official audio2token.pth")


def test_build_and_load_refuses_unsaved_buffers():
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.register_buffer("ids", torch.arange(2), persistent=False)

    saved = {f"linear.{k}": v for k, v in nn.Linear(2, 2).state_dict().items()}
    with pytest.raises(SonicWeightsError, match="ids"):
        build_and_load(WithBuffer, saved, source="x")


# -------------------------------------------------------------------------------------- SVD single-file renames

def test_svd_vae_renames_cover_the_full_key_list():
    ours = tsv_shapes("vae_temporal")
    theirs = to_stability(meta_state(ours), VAE_RULES)
    # The sgm first stage has no quant_conv; everything else has exactly one Stability name.
    theirs = {k: v for k, v in theirs.items() if not k.startswith("quant_conv.")}
    assert len(theirs) == len(ours) - 2
    # Names and shapes published for Stability/LDM VAE checkpoints (decoder levels counted from the top).
    assert tuple(theirs["decoder.up.0.block.0.nin_shortcut.weight"].shape) == (128, 256, 1, 1)
    assert tuple(theirs["decoder.up.1.block.0.nin_shortcut.weight"].shape) == (256, 512, 1, 1)
    assert "decoder.up.3.block.0.nin_shortcut.weight" not in theirs
    assert "decoder.up.1.upsample.conv.weight" in theirs and "decoder.up.0.upsample.conv.weight" not in theirs
    assert tuple(theirs["decoder.mid.attn_1.proj_out.weight"].shape) == (512, 512, 1, 1)
    assert tuple(theirs["encoder.down.1.block.0.nin_shortcut.weight"].shape) == (256, 128, 1, 1)
    assert tuple(theirs["decoder.up.3.block.2.time_stack.in_layers.2.weight"].shape) == (512, 512, 3, 1, 1)
    assert tuple(theirs["decoder.conv_out.time_mix_conv.weight"].shape) == (3, 3, 3, 1, 1)
    assert tuple(theirs["decoder.mid.block_2.mix_factor"].shape) == (1,)
    mapped = from_stability(theirs, VAE_RULES, "svd_xt.safetensors")
    assert set(mapped) == set(ours) - {"quant_conv.weight", "quant_conv.bias"}
    assert all(tuple(v.shape) == ours[k] for k, v in mapped.items())


def test_svd_clip_renames_cover_the_full_key_list():
    ours = tsv_shapes("clip_vision")
    theirs = to_stability(meta_state(ours), CLIP_RULES)
    assert len(theirs) == len(ours) - 2 * 32 * 2  # q, k, v weights and biases stack into in_proj_weight/bias
    assert tuple(theirs["transformer.resblocks.31.attn.in_proj_weight"].shape) == (3840, 1280)
    assert tuple(theirs["transformer.resblocks.4.attn.in_proj_bias"].shape) == (3840,)
    assert tuple(theirs["proj"].shape) == (1280, 1024) and tuple(theirs["conv1.weight"].shape) == (1280, 3, 14, 14)
    assert tuple(theirs["positional_embedding"].shape) == (257, 1280)
    mapped = from_stability(theirs, CLIP_RULES, "svd_xt.safetensors")
    assert set(mapped) == set(ours) and all(tuple(v.shape) == ours[k] for k, v in mapped.items())


def test_qkv_rows_proj_transpose_and_1x1_squeeze_are_value_correct():
    d = 8
    in_proj = torch.cat([torch.full((d, d), float(i)) for i in (1, 2, 3)]) + torch.arange(3 * d)[:, None] * 0.01
    theirs = {"transformer.resblocks.0.attn.in_proj_weight": in_proj,
              "transformer.resblocks.0.attn.in_proj_bias": torch.arange(3 * d, dtype=torch.float32),
              "proj": torch.randn(d, 5)}
    ours = from_stability(theirs, CLIP_RULES, "test")
    layer = "vision_model.encoder.layers.0.self_attn"
    for i, x in enumerate("qkv"):
        assert torch.equal(ours[f"{layer}.{x}_proj.weight"], in_proj[i * d:(i + 1) * d])
        assert torch.equal(ours[f"{layer}.{x}_proj.bias"], torch.arange(i * d, (i + 1) * d, dtype=torch.float32))
    assert torch.equal(ours["visual_projection.weight"], theirs["proj"].t())
    # The q/k/v order is torch.nn.MultiheadAttention's (what OpenCLIP runs): same output from the split weights.
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(d, 2, batch_first=True)
    theirs = {"transformer.resblocks.0.attn.in_proj_weight": mha.in_proj_weight.detach(),
              "transformer.resblocks.0.attn.in_proj_bias": mha.in_proj_bias.detach()}
    ours = from_stability(theirs, CLIP_RULES, "test")
    x = torch.randn(1, 5, d)
    q, k, v = (F.linear(x, ours[f"{layer}.{n}_proj.weight"], ours[f"{layer}.{n}_proj.bias"]).view(1, 5, 2, 4)
               .transpose(1, 2) for n in "qkv")
    split = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 5, d)
    want = mha(x, x, x, need_weights=False)[0]
    assert torch.allclose(F.linear(split, mha.out_proj.weight, mha.out_proj.bias), want, atol=1e-6)
    conv = torch.randn(4, 4, 1, 1)
    linear = from_stability({"encoder.mid.attn_1.q.weight": conv}, VAE_RULES, "test")
    tokens = (img := torch.randn(1, 4, 3, 3)).flatten(2).transpose(1, 2)
    assert torch.allclose(F.conv2d(img, conv).flatten(2).transpose(1, 2),
                          F.linear(tokens, linear["encoder.mid_block.attentions.0.to_q.weight"]))


@pytest.mark.slow  # importing diffusers takes ~10-40 s on a shared 2-core machine
def test_vae_renames_agree_with_diffusers_ldm_converter():
    """diffusers' LDM AutoencoderKL converter (test-only oracle) names every spatial tensor as our rules do."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ours = tiny_vae().state_dict()
    theirs = to_stability(ours, VAE_RULES)
    spatial = {k: v for k, v in theirs.items() if not re.search(r"time_stack|mix_factor|time_mix_conv", k)}
    spatial |= {"post_quant_conv.weight": torch.zeros(4, 4, 1, 1), "post_quant_conv.bias": torch.zeros(4)}
    config = {"block_out_channels": [32, 64], "layers_per_block": 1, "down_block_types": ["DownEncoderBlock2D"] * 2,
              "up_block_types": ["UpDecoderBlock2D"] * 2}
    converted = convert_ldm_vae_checkpoint(spatial, config)
    converted = {k: v for k, v in converted.items() if not k.startswith("post_quant_conv.")}
    assert len(converted) == len(spatial) - 2
    for key, tensor in converted.items():  # the temporal decoder wraps each 2D resnet as spatial_res_block
        key = re.sub(r"^(decoder\.(?:mid_block|up_blocks\.\d+)\.resnets\.\d+)\.", r"\1.spatial_res_block.", key)
        assert torch.equal(ours[key], tensor), key


def open_clip_visual_forward(sd: dict[str, torch.Tensor], image: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenCLIP's VisionTransformer on Stability-named tensors: the reference the renamed CLIP must reproduce."""
    width = sd["class_embedding"].shape[0]
    patch = sd["conv1.weight"].shape[-1]
    x = F.conv2d(image, sd["conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["class_embedding"].expand(x.shape[0], 1, width), x], dim=1) + sd["positional_embedding"]
    x = F.layer_norm(x, (width,), sd["ln_pre.weight"], sd["ln_pre.bias"])
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        p = {k.removeprefix(f"transformer.resblocks.{i}."): v for k, v in sd.items()
             if k.startswith(f"transformer.resblocks.{i}.")}
        attention = nn.MultiheadAttention(width, heads, batch_first=True)
        attention.load_state_dict({"in_proj_weight": p["attn.in_proj_weight"], "in_proj_bias": p["attn.in_proj_bias"],
                                   "out_proj.weight": p["attn.out_proj.weight"],
                                   "out_proj.bias": p["attn.out_proj.bias"]})
        h = F.layer_norm(x, (width,), p["ln_1.weight"], p["ln_1.bias"])
        x = x + attention(h, h, h, need_weights=False)[0]
        h = F.layer_norm(x, (width,), p["ln_2.weight"], p["ln_2.bias"])
        x = x + F.linear(F.gelu(F.linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])), p["mlp.c_proj.weight"],
                         p["mlp.c_proj.bias"])
    pooled = F.layer_norm(x[:, 0], (width,), sd["ln_post.weight"], sd["ln_post.bias"])
    return pooled @ sd["proj"]


def test_renamed_open_clip_runs_like_open_clip_in_transformers():
    """Renamed OpenCLIP weights in transformers' CLIPVisionModelWithProjection (test-only reference) give OpenCLIP's
    image embedding: q/k/v order, the transposed proj and every layer norm land where they belong."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    ours = tiny_clip_state()
    theirs = to_stability(ours, CLIP_RULES)
    config = CLIPVisionConfig(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=4, patch_size=2, projection_dim=6, hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    model.load_state_dict(from_stability(theirs, CLIP_RULES, "svd_xt.safetensors"), strict=True)
    image = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        got = model(pixel_values=image).image_embeds
        want = open_clip_visual_forward(theirs, image, heads=2)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_unknown_stability_key_is_an_error():
    with pytest.raises(SonicWeightsError, match="'encoder.mid.attn_2.q.weight'.*unknown name"):
        from_stability({"encoder.mid.attn_2.q.weight": torch.zeros(1, 1, 1, 1)}, VAE_RULES, "svd_xt.safetensors")
    with pytest.raises(SonicWeightsError, match="expected a 1x1 convolution"):
        from_stability({"encoder.mid.attn_1.q.weight": torch.zeros(4, 4, 3, 3)}, VAE_RULES, "svd_xt.safetensors")


def tiny_vae() -> TemporalVAE:
    torch.manual_seed(3)
    vae = TemporalVAE(VAEConfig(block_out_channels=(32, 64), layers_per_block=1))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        vae.quant_conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))  # what the single file implies
        vae.quant_conv.bias.zero_()
    return vae.eval()


def write_single_file(path: Path, vae: TemporalVAE, clip: dict[str, torch.Tensor]) -> None:
    vae_sd = {k: v for k, v in vae.state_dict().items() if not k.startswith("quant_conv.")}
    tensors = {VAE_PREFIX + k: v for k, v in to_stability(vae_sd, VAE_RULES).items()}
    tensors |= {CLIP_PREFIX + k: v for k, v in to_stability(clip, CLIP_RULES).items()}
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 8, 3, 3)
    tensors["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.zeros(())
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def tiny_clip_state(layers: int = 2, width: int = 8, dim: int = 6) -> dict[str, torch.Tensor]:
    """CLIP vision tensors with the TSV's names (layer 0 repeated) and every size scaled down: 2x2 patches of 2 px."""
    shapes = {k: s for k, s in tsv_shapes("clip_vision").items() if ".layers." not in k or ".layers.0." in k}
    sizes = {1280: width, 5120: 4 * width, 1024: dim, 257: 5, 14: 2}

    def small(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sizes.get(n, n) for n in shape)

    torch.manual_seed(4)
    sd = {}
    for key, shape in shapes.items():
        for i in range(layers) if ".layers.0." in key else [None]:
            sd[key.replace(".layers.0.", f".layers.{i}.") if i is not None else key] = torch.randn(small(shape))
    return sd


def test_single_file_and_folder_give_the_same_parts(tmp_path):
    vae, clip = tiny_vae(), tiny_clip_state()
    write_single_file(tmp_path / "svd_xt.safetensors", vae, clip)
    folder = tmp_path / "stable-video-diffusion-img2vid-xt"
    (folder / "vae").mkdir(parents=True)
    (folder / "image_encoder").mkdir()
    save_file(vae.state_dict(), folder / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    save_file(clip | {"vision_model.embeddings.position_ids": torch.arange(5)[None]},
              folder / "image_encoder" / "model.safetensors")
    from_file, from_folder = load_svd_parts(tmp_path / "svd_xt.safetensors"), load_svd_parts(folder)
    for parts in (from_file, from_folder):
        assert set(parts) == {"vae", "image_encoder"}
        assert set(parts["image_encoder"]) == set(clip)
        assert all(torch.equal(parts["image_encoder"][k], v) for k, v in clip.items())
        assert set(parts["vae"]) == set(vae.state_dict())
        assert all(torch.equal(parts["vae"][k], v) for k, v in vae.state_dict().items())
    loaded = build_and_load(lambda: TemporalVAE(VAEConfig(block_out_channels=(32, 64), layers_per_block=1)),
                            from_file["vae"], source="svd_xt.safetensors")
    image, latents = torch.randn(1, 3, 16, 16), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.encode_mode(image), vae.encode_mode(image))
        assert torch.equal(loaded.decode(latents, 2), vae.decode(latents, 2))


def test_a_post_quant_conv_in_the_single_file_is_not_read(tmp_path):
    vae, clip = tiny_vae(), tiny_clip_state()
    write_single_file(tmp_path / "plain.safetensors", vae, clip)
    tensors = {k: v for k, v in read_state_dict(tmp_path / "plain.safetensors").items()}
    tensors[VAE_PREFIX + "post_quant_conv.weight"] = torch.eye(4).reshape(4, 4, 1, 1)
    tensors[VAE_PREFIX + "post_quant_conv.bias"] = torch.zeros(4)
    save_file(tensors, tmp_path / "with_post_quant_conv.safetensors")
    plain, extra = (load_svd_parts(tmp_path / f"{n}.safetensors") for n in ("plain", "with_post_quant_conv"))
    assert set(plain["vae"]) == set(extra["vae"]) == set(vae.state_dict())
    assert all(torch.equal(plain["vae"][k], extra["vae"][k]) for k in plain["vae"])


def test_single_file_errors(tmp_path):
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(2)}, tmp_path / "svd_xt.safetensors")
    with pytest.raises(SonicWeightsError, match=r"no first_stage_model.\* tensors \(VAE\): not a Stable Video Diff"):
        load_svd_parts(tmp_path / "svd_xt.safetensors")
    save_file({VAE_PREFIX + "decoder.up.0.block.0.norm1.weight": torch.zeros(1), CLIP_PREFIX + "proj": torch.zeros(1)},
              tmp_path / "svd_xt_image_decoder.safetensors")
    with pytest.raises(SonicWeightsError, match="its VAE has no temporal decoder"):
        load_svd_parts(tmp_path / "svd_xt_image_decoder.safetensors")
    vae = tiny_vae()
    write_single_file(tmp_path / "cut.safetensors", vae, tiny_clip_state())
    parts = load_svd_parts(tmp_path / "cut.safetensors")
    del parts["vae"]["decoder.conv_in.bias"]  # a file missing a tensor fails at the strict load, by name
    with pytest.raises(SonicWeightsError, match="1 missing .*decoder.conv_in.bias"):
        build_and_load(lambda: TemporalVAE(VAEConfig(block_out_channels=(32, 64), layers_per_block=1)),
                       parts["vae"], source="svd_xt.safetensors")
    with pytest.raises(SonicWeightsError, match="not found"):
        load_svd_parts(tmp_path / "nothing.safetensors")


# -------------------------------------------------------------------------------------------- UNet, whisper, RIFE

def test_a_unet_file_with_a_second_ip_adapter_is_refused_by_name(tmp_path):
    adapter = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip."
    torch.save({adapter + "0.weight": torch.zeros(2, 2)}, tmp_path / "unet.pth")
    assert list(read_unet(tmp_path / "unet.pth")) == [adapter + "0.weight"]
    torch.save({adapter + "0.weight": torch.zeros(2, 2), adapter + "1.weight": torch.zeros(2, 2)}, tmp_path / "ip.pth")
    with pytest.raises(SonicWeightsError, match=r"ip\.pth has a second IP adapter .*it is not a Sonic UNet; use Sonic/"):
        read_unet(tmp_path / "ip.pth")


def test_whisper_encoder_from_the_hf_checkpoint_names(tmp_path):
    encoder = tsv_shapes("whisper_tiny_encoder")
    torch.manual_seed(5)
    small = {k: torch.randn(tuple(min(n, 3) for n in s)) for k, s in encoder.items()}
    full = {f"model.{k}": v for k, v in small.items()}
    full |= {"model.decoder.embed_tokens.weight": torch.zeros(3, 2), "proj_out.weight": torch.zeros(3, 2)}
    assert set(whisper_encoder_state_dict(full)) == set(encoder)
    assert set(whisper_encoder_state_dict(small)) == set(encoder)
    (tmp_path / "whisper-tiny").mkdir()
    save_file(full, tmp_path / "whisper-tiny" / "model.safetensors")
    read = read_whisper_encoder(tmp_path / "whisper-tiny")
    assert set(read) == set(encoder) and all(torch.equal(read[k], small[k]) for k in encoder)
    with pytest.raises(SonicWeightsError, match="no whisper encoder tensors"):
        whisper_encoder_state_dict({"decoder.layers.0.fc1.weight": torch.zeros(1)})


def test_rife_prefix_is_optional(tmp_path):
    keys = tsv_shapes("rife_flownet")
    assert all(k.startswith("module.") for k in keys)
    torch.manual_seed(6)
    sd = {k: torch.randn(2) for k in keys}
    bare = {k.removeprefix("module."): v for k, v in sd.items()}
    assert rife_state_dict(sd).keys() == bare.keys() == rife_state_dict(bare).keys()
    torch.save(sd, tmp_path / "flownet.pkl", _use_new_zipfile_serialization=False)  # legacy format, like the real one
    read = read_rife(tmp_path / "flownet.pkl")
    assert read.keys() == bare.keys() and all(torch.equal(read[k], v) for k, v in bare.items())


# ---------------------------------------------------------------------------------------- fetch-weights (offline)

def fake_hub_cache(cache: Path, skip: str | None = None) -> dict[str, bytes]:
    """The hub cache layout: models--ORG--NAME/{refs/main, snapshots/REV/FILE -> ../../blobs/ID}."""
    contents = {}
    for n, item in enumerate(HUB_FILES):
        repo = cache / f"models--{item.repo.replace('/', '--')}"
        revision = "0123456789abcdef0123456789abcdef01234567"
        touch(repo / "refs" / "main", revision.encode())
        data = f"{item.repo}:{item.filename}:{n}".encode() * 10
        contents[f"{item.repo}/{item.filename}"] = data
        if item.filename == skip:
            continue
        blob = touch(repo / "blobs" / f"blob{n}", data)
        link = repo / "snapshots" / revision / item.filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return contents


def test_fetch_weights_from_the_hub_cache(tmp_path):
    contents = fake_hub_cache(tmp_path / "cache")
    files = fetch_weights(tmp_path / "w", progress=False, cache_dir=tmp_path / "cache")
    w = tmp_path / "w"
    assert (files.unet, files.rife, files.yoloface) == (w / "Sonic" / "unet.pth", w / "RIFE" / "flownet.pkl",
                                                        w / "yoloface_v5m.pt")
    assert files.whisper == w / "whisper-tiny" and files.svd_kind == "folder"
    assert files.require("yoloface", "rife", "unet", "audio2token", "audio2bucket", "whisper", "svd") is files
    for item in HUB_FILES:
        target = item.target(w)
        assert target.read_bytes() == contents[f"{item.repo}/{item.filename}"]
    assert (w / "stable-video-diffusion-img2vid-xt" / "vae" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert not (w / "stable-video-diffusion-img2vid-xt" / "unet").exists()
    blob = next((tmp_path / "cache" / "models--LeonJoe13--Sonic" / "blobs").iterdir())
    assert any(os.path.samefile(blob, item.target(w)) for item in HUB_FILES)  # hard-linked, not copied
    assert fetch_weights(tmp_path / "w", progress=False, cache_dir=tmp_path / "cache") == files  # re-run: same tree


def test_fetch_weights_offline_message_lists_the_absent_file(tmp_path):
    fake_hub_cache(tmp_path / "cache", skip="image_encoder/model.fp16.safetensors")
    with pytest.raises(SonicWeightsError) as err:
        fetch_weights(tmp_path / "w", progress=False, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert f"got {len(HUB_FILES) - 1} of {len(HUB_FILES)} files" in message and "\n" not in message
    target = tmp_path / "w" / "stable-video-diffusion-img2vid-xt" / "image_encoder" / "model.fp16.safetensors"
    assert f"stabilityai/stable-video-diffusion-img2vid-xt/image_encoder/model.fp16.safetensors -> {target}" in message
    assert "offline" in message and "https://huggingface.co/stabilityai/" in message
    assert (tmp_path / "w" / "Sonic" / "unet.pth").is_file()  # the others were placed


def test_fetch_weights_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(SonicDependencyError, match="pip install huggingface_hub"):
        fetch_weights(tmp_path)


def test_fetch_weights_cli(tmp_path, capsys):
    fake_hub_cache(tmp_path / "cache")
    parser = argparse.ArgumentParser()
    add_fetch_weights_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fetch-weights", "--dir", str(tmp_path / "w"), "--cache-dir", str(tmp_path / "cache"),
                              "--no-progress", "--json"])
    assert args.run(args) == 0
    located = json.loads(capsys.readouterr().out)
    assert located["unet"] == str(tmp_path / "w" / "Sonic" / "unet.pth") and located["svd_kind"] == "folder"
