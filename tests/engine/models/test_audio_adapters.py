"""Audio adapters beyond the goldens: batch folding, the bucket map and strict loading errors."""

from __future__ import annotations

import pytest
import torch

from sonic_core.errors import SonicWeightsError
from sonic_core.models.audio_adapters import Audio2BucketModel, AudioProjModel, to_motion_buckets
from sonic_core.weights.reading import load_strict

TOKEN_ARGS = dict(seq_len=10, blocks=5, channels=8, intermediate_dim=16, output_dim=12, context_tokens=4)
BUCKET_ARGS = dict(seq_len=50, blocks=1, channels=8, clip_channels=6, intermediate_dim=16)


def test_audio2token_rows_are_independent_of_batching() -> None:
    torch.manual_seed(0)
    model = AudioProjModel(**TOKEN_ARGS).eval()
    windows = torch.randn(2, 3, 10, 5, 8)
    with torch.no_grad():
        batched = model(windows)
        single = model(windows[1:2, 2:3])
    assert batched.shape == (2, 3, 4, 12)
    assert torch.allclose(batched[1, 2], single[0, 0], atol=1e-6)


def test_audio2bucket_concatenates_clip_after_audio() -> None:
    torch.manual_seed(0)
    model = Audio2BucketModel(**BUCKET_ARGS).eval()
    audio, clip = torch.randn(1, 2, 50, 1, 8), torch.randn(2, 6)
    with torch.no_grad():
        out = model(audio, clip)
        layer1 = model.proj1(torch.cat([audio[0, 1].reshape(-1), clip[1]]))
        want = model.proj3(torch.nn.functional.silu(model.proj2(torch.nn.functional.silu(layer1))))
    assert out.shape == (1, 2, 2, 1)
    assert torch.allclose(out[0, 1].reshape(-1), want, atol=1e-6)


def test_motion_bucket_map() -> None:
    assert to_motion_buckets(torch.tensor([0.0, -1.0, 0.5])).tolist() == [16.0, 0.0, 24.0]


def test_wrong_checkpoint_is_a_weights_error() -> None:
    model = AudioProjModel(**TOKEN_ARGS)
    state = dict(model.state_dict())
    state["proj3.bias"] = torch.zeros(3)
    with pytest.raises(SonicWeightsError, match="audio2token.pth does not match AudioProjModel"):
        load_strict(model, state, "audio2token.pth", "use Sonic/audio2token.pth")
