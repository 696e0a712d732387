"""RIFE ×2: full-size keys, the real HDv3 weights (scripts/fetch_assets.py), motion accuracy on a real photo,
streaming == whole clip, and one-line errors for bad inputs and files."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from sonic_testing import REPO

from sonic_core.errors import SonicInputError, SonicWeightsError
from sonic_core.interpolation import Rife2x, interpolate_x2
from sonic_core.models.rife import IFNet
from sonic_core.weights.components import load_rife_state_dict
from sonic_core.weights.layout import RIFE_DEMO_FRAMES, RIFE_WEIGHTS, assets_dir
from sonic_core.weights.loader import load_rife

KEYS = REPO.parent / "shared" / "sonic" / "keys" / "rife_ifnet_official_module.tsv"
PORTRAIT = REPO / "sonic_core" / "assets" / "portrait.jpg"


def weights_path():
    path = assets_dir() / RIFE_WEIGHTS
    if not path.is_file():
        pytest.fail(f"real RIFE weights absent at {path}: run scripts/fetch_assets.py")
    return path


@pytest.fixture(scope="module")
def rife() -> IFNet:
    return load_rife(weights_path())


def random_rife(seed: int = 0) -> IFNet:
    torch.manual_seed(seed)
    model = IFNet().eval().requires_grad_(False)
    with torch.no_grad():  # default init gives near-zero flow; make every block matter
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def read_rgb(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_keys_and_shapes_equal_the_official_module():
    with KEYS.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    want = {r["key"]: tuple(int(d) for d in r["shape"].split(",") if d) for r in rows}
    got = {k: tuple(v.shape) for k, v in IFNet().state_dict().items()}
    assert got == want
    assert list(got) == [r["key"] for r in rows]
    assert sum(p.numel() for p in IFNet().parameters()) == 3_038_015


def test_real_weights_load_with_and_without_prefix(rife):
    raw = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    bare = IFNet()
    load_rife_state_dict(bare, {k.removeprefix("module."): v for k, v in raw.items()}, "stripped")
    for name, tensor in bare.state_dict().items():
        assert torch.equal(tensor, rife.state_dict()[name])
        assert torch.equal(tensor, raw["module." + name])


@pytest.mark.parametrize("shift", [(8, 0), (8, 6), (-12, 8)])
def test_midpoint_of_a_shifted_photo_is_the_half_shift(rife, shift):
    """The middle of (window, window moved by (dx, dy)) must be the window moved by half: a flow-based
    interpolator gets that to within JPEG noise, a cross-fade cannot."""
    photo = read_rgb(PORTRAIT)
    dx, dy = shift

    def window(ox, oy, x=160, y=112, size=192):
        return photo[:, y + oy:y + oy + size, x + ox:x + ox + size]

    a, b, target = window(0, 0), window(dx, dy), window(dx // 2, dy // 2)
    mid = rife.midpoint(a[None], b[None])[0]
    inner = slice(12, -12)  # content that enters through the border cannot be predicted

    def mae(x):
        return (x - target)[:, inner, inner].abs().mean().item()

    assert mae(mid) < 0.006
    assert mae(mid) < mae((a + b) / 2) / 10


def test_demo_pair_is_symmetric_and_no_cross_fade(rife):
    a, b = (read_rgb(assets_dir() / p) for p in RIFE_DEMO_FRAMES)
    a, b = a[:, 96:224, 96:352], b[:, 96:224, 96:352]  # the crossing cars, kept small for speed
    forward = rife.midpoint(a[None], b[None])[0]
    backward = rife.midpoint(b[None], a[None])[0]
    assert (forward - backward).abs().max() < 1e-4  # both directions are averaged: order must not matter
    blend = (a + b) / 2
    # the cars are moved, not faded: the middle frame is as far from the double-exposure as the inputs are
    assert (forward - blend).abs().mean() > 0.8 * (a - blend).abs().mean()


def test_identical_frames_give_the_frame(rife):
    frame = read_rgb(PORTRAIT)[:, 200:264, 200:264]
    out = interpolate_x2(torch.stack([frame, frame]), rife)
    assert out.shape == (3, 3, 64, 64)
    assert (out[1] - frame).abs().mean() < 1e-3 and (out[1] - frame).abs().max() < 0.02


def test_interpolate_x2_order_and_batching():
    model = random_rife()
    frames = torch.rand(4, 3, 16, 48)
    out = interpolate_x2(frames, model, batch_size=2)
    assert out.shape == (7, 3, 16, 48)
    assert torch.equal(out[0::2], frames)
    singles = torch.cat([model.midpoint(frames[i:i + 1], frames[i + 1:i + 2]) for i in range(3)])
    torch.testing.assert_close(out[1::2], singles, rtol=0, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(interpolate_x2(frames[:1], model), frames[:1])


def test_interpolate_x2_pads_sizes_that_are_not_multiples_of_16():
    model = random_rife()
    frames = torch.rand(2, 3, 20, 30)
    out = interpolate_x2(frames, model)
    assert out.shape == (3, 3, 20, 30)
    padded = torch.nn.functional.pad(frames, (0, 2, 0, 12), mode="replicate")
    torch.testing.assert_close(out[1], model.midpoint(padded[:1], padded[1:])[0, :, :20, :30])
    with pytest.raises(SonicInputError, match="multiple of 16"):
        model.midpoint(frames[:1], frames[1:])


@pytest.mark.parametrize("chunks", [[3, 1, 0, 3], [1, 1, 1, 1], [5]])
def test_streaming_equals_whole_clip(chunks):
    model = random_rife(1)
    frames = torch.rand(sum(chunks), 3, 16, 32)
    whole = interpolate_x2(frames, model, batch_size=3)
    stream = Rife2x(model, batch_size=2)
    parts, start, held = [], 0, 0
    for n in chunks:
        parts.append(stream.push(frames[start:start + n]))
        start += n
        available = held + n  # each push returns every frame it can finish, with the middle frame after each
        assert len(parts[-1]) == max(2 * (available - 1), 0)
        held = min(available, 1)
    parts.append(stream.finish())
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)
    assert stream.finish().shape[0] == 0


def test_streaming_rejects_a_size_change():
    stream = Rife2x(random_rife())
    stream.push(torch.rand(2, 3, 32, 32))
    with pytest.raises(SonicInputError, match="share one size"):
        stream.push(torch.rand(2, 3, 48, 32))


def test_bad_frames():
    with pytest.raises(SonicInputError, match=r"\[F, 3, H, W\]"):
        interpolate_x2(torch.rand(2, 32, 32), random_rife())
    with pytest.raises(SonicInputError, match="no frames"):
        interpolate_x2(torch.rand(0, 3, 32, 32), random_rife())


def test_bad_weight_files(tmp_path):
    with pytest.raises(SonicWeightsError, match="not found"):
        load_rife(tmp_path / "missing.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(weights_path().read_bytes()[:100_000])
    with pytest.raises(SonicWeightsError, match="not a readable RIFE weights file"):
        load_rife(truncated)
    not_tensors = tmp_path / "config.pt"
    torch.save({"lr": 0.1}, not_tensors)
    with pytest.raises(SonicWeightsError, match="state dict of tensors"):
        load_rife(not_tensors)
    partial = tmp_path / "partial.pkl"
    sd = IFNet().state_dict()
    sd.pop("block_tea.conv2.2.bias")
    torch.save(sd, partial)
    with pytest.raises(SonicWeightsError, match="1 missing"):
        load_rife(partial)
    both = {**IFNet().state_dict(), "module.block0.conv0.0.0.bias": torch.zeros(45)}
    with pytest.raises(SonicWeightsError, match="with and without"):
        load_rife_state_dict(IFNet(), both, "both.pkl")
