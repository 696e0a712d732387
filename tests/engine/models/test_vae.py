"""The SVD temporal VAE: parity with diffusers (test-only reference), full-size keys, and the pipeline goldens."""

import csv
import hashlib
import json

import pytest
import torch
from sonic_testing import REPO, golden_dir, golden_manifest

from sonic_core.models.vae import TemporalVAE, VAEConfig

KEYS = REPO.parent / "shared" / "sonic" / "keys" / "vae_temporal.tsv"
SVD_VAE_CONFIG = REPO.parent / "shared" / "sonic" / "configs" / "svd" / "vae" / "config.json"


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def tiny_pair(seed: int, block_out_channels=(32, 64), layers_per_block=1):
    import diffusers
    torch.manual_seed(seed)
    ref = diffusers.AutoencoderKLTemporalDecoder(block_out_channels=list(block_out_channels),
                                                 down_block_types=["DownEncoderBlock2D"] * len(block_out_channels),
                                                 layers_per_block=layers_per_block).eval()
    with torch.no_grad():  # make norms, biases and the mix factors non-trivial
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = TemporalVAE(VAEConfig(block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours.eval()


@pytest.mark.parametrize("seed,channels,layers,size", [(0, (32, 64), 1, (32, 48)), (1, (32, 32, 64), 2, (40, 24))])
def test_encode_matches_diffusers(seed, channels, layers, size):
    ref, ours = tiny_pair(seed, channels, layers)
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mode()
        got = ours.encode_mode(x)
    assert got.shape == want.shape
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_decode_matches_diffusers(frames):
    ref, ours = tiny_pair(2, (32, 32, 64), 1)
    z = torch.randn(2 * frames, 4, 6, 5)
    with torch.no_grad():
        want = ref.decode(z, num_frames=frames).sample
        got = ours.decode(z, num_frames=frames)
    assert rel_err(got, want) <= 1e-5


def test_decode_chunks_scale_and_split():
    _, ours = tiny_pair(3)
    z = torch.randn(7, 4, 4, 4)
    with torch.no_grad():
        chunks = list(ours.decode_chunks(z, chunk_size=3))
        whole_first = ours.decode(z[:3] * (1 / 0.18215), num_frames=3)
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    assert torch.equal(chunks[0], whole_first)


def test_full_size_keys_on_meta():
    rows = list(csv.DictReader(KEYS.open(), delimiter="\t"))
    with torch.device("meta"):
        vae = TemporalVAE(json.loads(SVD_VAE_CONFIG.read_text()))
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    want = {r["key"]: tuple(int(s) for s in r["shape"].split(",") if s) for r in rows}
    assert ours == want
    assert len(ours) == 374
    assert sum(p.numel() for p in vae.parameters()) == 97_742_847


PIPELINES = [fx for fx in golden_manifest() if fx["kind"] == "sonic_pipeline"]


@pytest.mark.parametrize("fx", PIPELINES, ids=[fx["name"] for fx in PIPELINES])
def test_vae_reproduces_pipeline_goldens(fx, record_property):
    """Encode (reference and conditioning latents) and chunked decode of the official pipeline fixtures."""
    path = golden_dir() / fx["pt"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fx["sha256"]
    meta = json.loads((golden_dir() / fx["json"]).read_text())
    data = torch.load(path, map_location="cpu", weights_only=True)
    vae = TemporalVAE(meta["configs"]["vae"]).eval()
    vae.load_state_dict(data["state_dicts"]["vae"], strict=True)
    inputs, inter, settings = data["inputs"], data["intermediates"], meta["settings"]
    with torch.no_grad():
        ref = inputs["ref_img"][None]
        ref_latents = vae.config.scaling_factor * vae.encode_mode(ref)
        cond_latents = vae.encode_mode(ref + settings["noise_aug_strength"] * inputs["noise_aug"])
        latents = data["outputs"]["latents"][0]
        frames = torch.cat(list(vae.decode_chunks(latents, settings["decode_chunk_size"])))
    tol = json.loads((golden_dir() / "manifest.json").read_text())["tolerance"]["fp32_max_rel"]
    errors = {"ref_image_latents": rel_err(ref_latents, inter["ref_image_latents"]),
              "image_latents": rel_err(cond_latents, inter["image_latents"]),
              "frames": rel_err(frames.permute(1, 0, 2, 3)[None], data["outputs"]["frames"])}
    for name, err in errors.items():
        record_property(f"max_rel_{name}", err)
    assert max(errors.values()) <= tol, errors
