"""Behaviour of the Sonic UNet beyond the goldens: the lean paths (MODEL.md §10 items 5–7), the audio scale, the mask,
and the loader's errors. Tiny random configs only."""

from __future__ import annotations

import pytest
import torch

from sonic_core.errors import SonicWeightsError
from sonic_core.models import attention
from sonic_core.models.layers import multi_head_attention
from sonic_core.models.unet import SonicUNet
from sonic_core.weights.components import load_unet_state_dict

TINY = dict(block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), num_attention_heads=(2, 2),
            cross_attention_dim=16, addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
            layers_per_block=1)
B, F, H, W, T = 2, 3, 4, 6, 5


def _model(seed: int = 0, **kwargs) -> SonicUNet:
    torch.manual_seed(seed)
    model = SonicUNet(**TINY, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(B, F, 8, H, W, generator=gen), timestep=torch.tensor(0.3),
                clip_embeds=torch.randn(B * F, 1, 16, generator=gen),
                audio_tokens=torch.randn(B * F, T, 16, generator=gen),
                added_time_ids=torch.tensor([[12.5, 20.0, 30.0]] * B))


def _run(model: SonicUNet, face_mask: torch.Tensor | None = None, **overrides) -> torch.Tensor:
    with torch.no_grad():
        return model(**{**_inputs(), **overrides}, face_mask=face_mask)


def test_output_shape_and_timestep_forms() -> None:
    model = _model()
    out = _run(model)
    assert out.shape == (B, F, 4, H, W)
    assert torch.equal(out, _run(model, timestep=0.3))
    assert torch.equal(out, _run(model, timestep=torch.tensor([0.3, 0.3])))


def test_temporal_audio_keys_are_projected_once_per_batch_element() -> None:
    """The temporal attn2 projects the frame-mean contexts ``[B, T, D]``, never one copy per spatial position."""
    model = _model()
    seen: dict[str, list[tuple[int, ...]]] = {"temporal": [], "spatial": []}
    for name, module in model.named_modules():
        if name.endswith("attn2.processor.to_k_ip.0"):
            kind = "temporal" if "temporal_transformer_blocks" in name else "spatial"
            module.register_forward_hook(lambda m, i, o, kind=kind: seen[kind].append(tuple(i[0].shape)))
    _run(model)
    assert seen["temporal"] and all(shape == (B, T, 16) for shape in seen["temporal"])
    assert seen["spatial"] and all(shape == (B * F, T, 16) for shape in seen["spatial"])


def test_convolutions_and_norms_see_contiguous_frames() -> None:
    """No channels-last tensor leaks out of an attention site into the 2-D convolutions and GroupNorms (they are
    slower on it); 5-D temporal inputs are permuted views by design and not checked."""
    model = _model()
    strays: list[str] = []

    def check(name: str):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].dim() == 4 and not args[0].is_contiguous():
                strays.append(name)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm)):
            module.register_forward_pre_hook(check(name))
    _run(model, face_mask=torch.rand(1, 1, 8 * H, 8 * W))
    assert strays == []


def test_clip_branch_never_computes_keys() -> None:
    """One CLIP token: softmax is 1, so the branch is ``to_v(clip)`` broadcast and ``to_k`` is never run."""
    model = _model()
    calls = []
    for name, module in model.named_modules():
        if name.endswith("attn2.to_k"):
            module.register_forward_hook(lambda m, i, o: calls.append(1))
    _run(model)
    assert calls == []


def test_clip_branch_equals_full_attention() -> None:
    torch.manual_seed(0)
    attn = attention.AudioCrossAttention(32, 16, heads=2, head_dim=16).eval()
    x, clip, audio = torch.randn(3, 7, 32), torch.randn(3, 1, 16), torch.randn(3, 5, 16)
    with torch.no_grad():
        got = attn(x, clip, audio)
        q = attn.to_q(x)
        full = multi_head_attention(q, attn.to_k(clip), attn.to_v(clip), 2)
        ip = multi_head_attention(q, attn.processor.to_k_ip[0](audio), attn.processor.to_v_ip[0](audio), 2)
        want = attn.to_out[0](full + ip)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_face_mask_is_resized_once_per_grid(monkeypatch) -> None:
    model = _model()
    calls: list[int] = []
    real = attention.downsample_mask
    monkeypatch.setattr(attention, "downsample_mask", lambda mask, q: calls.append(q) or real(mask, q))
    _run(model, face_mask=torch.rand(1, 1, 8 * H, 8 * W))
    assert sorted(calls) == [(H // 2) * (W // 2), H * W]


def test_full_mask_equals_unmasked_and_zero_mask_drops_spatial_audio() -> None:
    model = _model()
    unmasked = _run(model)
    ones = _run(model, face_mask=torch.ones(1, 1, 8 * H, 8 * W))
    assert torch.allclose(ones, unmasked, atol=1e-5, rtol=0)
    zeros = _run(model, face_mask=torch.zeros(1, 1, 8 * H, 8 * W))
    assert not torch.allclose(zeros, unmasked, atol=1e-4, rtol=0)


def test_ip_scale_zero_ignores_audio() -> None:
    model = _model(ip_scale=0.0)
    other_audio = torch.randn(B * F, T, 16)
    assert torch.equal(_run(model), _run(model, audio_tokens=other_audio))
    model.ip_scale = 1.0
    assert not torch.allclose(_run(model), _run(model, audio_tokens=other_audio))


def test_load_rejects_second_ip_adapter() -> None:
    model = _model()
    state = dict(model.state_dict())
    key = next(k for k in state if k.endswith("to_k_ip.0.weight"))
    state[key.replace("to_k_ip.0", "to_k_ip.1")] = state[key].clone()
    with pytest.raises(SonicWeightsError, match="to_k_ip.1"):
        load_unet_state_dict(model, state)


def test_load_reports_missing_and_wrong_shapes() -> None:
    model = _model()
    state = dict(model.state_dict())
    del state["conv_in.bias"]
    with pytest.raises(SonicWeightsError, match="1 missing"):
        load_unet_state_dict(model, state, source="x.pth")
    state = dict(model.state_dict())
    state["conv_out.bias"] = torch.zeros(5)
    with pytest.raises(SonicWeightsError, match="1 of the wrong shape"):
        load_unet_state_dict(model, state)


def test_load_round_trip() -> None:
    source, target = _model(seed=0), _model(seed=5)
    load_unet_state_dict(target, source.state_dict())
    assert torch.equal(_run(source), _run(target))


@pytest.mark.parametrize("height,width,queries,grid", [(64, 64, 4096, (64, 64)), (512, 768, 96, (8, 12)),
                                                       (64, 96, 34, (5, 6))])
def test_mask_grid(height: int, width: int, queries: int, grid: tuple[int, int]) -> None:
    assert attention.mask_grid(height, width, queries) == grid


def test_forward_traces_as_one_graph_for_torch_compile() -> None:
    """``SonicPipeline(compile=True)`` compiles the UNet; a graph break (a ``.item()``, a data-dependent branch)
    would split it into pieces compiled and guarded apart, each recompiled for every new shape. Dynamo's trace
    alone (no inductor) keeps this check to seconds; the compiled values are compared in ``bench/speed_bench.py``."""
    model = _model()
    inputs = {**_inputs(), "audio_tokens": torch.randn(1 + F, T, 16), "audio_index": torch.arange(B * F) % (1 + F)}
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(**inputs, face_mask=torch.rand(1, 1, 32, 48))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
