"""Parity of the shared building blocks with the corresponding diffusers modules (test-only references).

Each test builds the diffusers module, perturbs its weights so that norms, biases and mix factors are non-trivial,
loads the same state dict strictly into ours and compares outputs on random input.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models import downsampling, embeddings, resnet, upsampling

from sonic_core.models import layers

TOL = 1e-5


def _perturbed(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module.state_dict()


def _check(ours: torch.nn.Module, ref: torch.nn.Module, *args, ours_args=None) -> None:
    # diffusers' Downsample2D registers its conv twice (``conv`` and ``Conv2d_0``); checkpoints use ``conv``
    state = {k: v for k, v in _perturbed(ref).items() if not k.startswith("Conv2d_0.")}
    ours.load_state_dict(state, strict=True)
    ours.eval(), ref.eval()
    with torch.no_grad():
        want = ref(*args)
        got = ours(*(ours_args if ours_args is not None else args))
    assert got.shape == want.shape
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel <= TOL, rel


@pytest.mark.parametrize("dim,flip,shift", [(8, True, 0.0), (9, False, 1.0), (320, True, 0.0), (4, True, 0.0)])
def test_timestep_embedding(dim: int, flip: bool, shift: float) -> None:
    t = torch.tensor([0.0, 1.5, -1.55365, 12.5, 700.0, 3.0])
    want = embeddings.Timesteps(dim, flip, shift)(t)
    got = layers.timestep_embedding(t, dim, flip_sin_to_cos=flip, freq_shift=shift)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL


def test_timestep_embedding_mlp() -> None:
    torch.manual_seed(0)
    ref = embeddings.TimestepEmbedding(16, 64, out_dim=32)
    _check(layers.TimestepEmbedding(16, 64, out_dim=32), ref, torch.randn(5, 16))


@pytest.mark.parametrize("cin,cout,temb,eps", [(32, 32, 24, 1e-6), (64, 32, 24, 1e-5), (32, 64, None, 1e-6)])
def test_resnet_block_2d(cin: int, cout: int, temb: int | None, eps: float) -> None:
    torch.manual_seed(1)
    ref = resnet.ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, eps=eps)
    x = torch.randn(2, cin, 5, 7)
    t = torch.randn(2, temb) if temb else None
    _check(layers.ResnetBlock2D(cin, cout, temb, eps), ref, x, t)


@pytest.mark.parametrize("temb", [24, None])
def test_temporal_resnet_block(temb: int | None) -> None:
    torch.manual_seed(2)
    ref = resnet.TemporalResnetBlock(32, 32, temb_channels=temb if temb else 512, eps=1e-5)
    if temb is None:
        ref.time_emb_proj = None
    x = torch.randn(2, 32, 4, 3, 5)
    t = torch.randn(2, 4, temb) if temb else None
    _check(layers.TemporalResnetBlock(32, 32, temb, eps=1e-5), ref, x, t)


@pytest.mark.parametrize("cin,cout,temb,eps,teps,strategy,switch", [
    (32, 32, 24, 1e-6, None, "learned_with_images", False),   # UNet cross-attention blocks
    (64, 32, 24, 1e-5, None, "learned_with_images", False),   # UNet up block with skip input
    (32, 32, None, 1e-6, 1e-5, "learned", True),              # VAE temporal decoder
])
def test_spatio_temporal_res_block(cin, cout, temb, eps, teps, strategy, switch) -> None:
    torch.manual_seed(3)
    b, f = 2, 3
    ref = resnet.SpatioTemporalResBlock(cin, cout, temb_channels=temb if temb else 512, eps=eps, temporal_eps=teps,
                                        merge_strategy=strategy, switch_spatial_to_temporal_mix=switch)
    if temb is None:
        ref.spatial_res_block.time_emb_proj = None
        ref.temporal_res_block.time_emb_proj = None
    x = torch.randn(b * f, cin, 4, 6)
    t = torch.randn(b * f, temb) if temb else None
    indicator = torch.zeros(b, f)
    ours = layers.SpatioTemporalResBlock(cin, cout, temb, eps=eps, temporal_eps=teps, merge_strategy=strategy,
                                         switch_spatial_to_temporal_mix=switch)
    _check(ours, ref, x, t, indicator, ours_args=(x, t, f))


@pytest.mark.parametrize("strategy,switch", [("learned_with_images", False), ("learned", True), ("learned", False)])
def test_alpha_blender(strategy: str, switch: bool) -> None:
    ref = resnet.AlphaBlender(0.3, strategy, switch)
    xs, xt = torch.randn(6, 5, 4), torch.randn(6, 5, 4)
    indicator = torch.zeros(2, 3) if strategy == "learned_with_images" else None
    _check(layers.AlphaBlender(0.3, strategy, switch), ref, xs, xt, indicator, ours_args=(xs, xt))


def test_alpha_blender_image_only_rows_keep_spatial() -> None:
    blender = layers.AlphaBlender(0.3, "learned_with_images")
    xs, xt = torch.ones(2, 3), torch.zeros(2, 3)
    out = blender(xs, xt, torch.tensor([[True], [False]]))
    assert torch.equal(out[0], torch.ones(3))
    assert torch.allclose(out[1], torch.sigmoid(torch.tensor(0.3)).expand(3))


@pytest.mark.parametrize("padding", [1, 0])
def test_downsample(padding: int) -> None:
    torch.manual_seed(4)
    ref = downsampling.Downsample2D(32, use_conv=True, out_channels=32, padding=padding, name="conv")
    _check(layers.Downsample2D(32, 32, padding=padding), ref, torch.randn(2, 32, 6, 10))


def test_upsample() -> None:
    torch.manual_seed(5)
    ref = upsampling.Upsample2D(32, use_conv=True, out_channels=32)
    _check(layers.Upsample2D(32, 32), ref, torch.randn(2, 32, 3, 5))
