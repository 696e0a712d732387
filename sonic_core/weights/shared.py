"""Our SVD VAE and CLIP image encoder built on tensors another program already holds, so that the SVD weights are in
memory once.

ComfyUI's Image Only Checkpoint Loader holds SVD's VAE (its first stage, under the Stability names without the
``first_stage_model.`` prefix) and CLIP image encoder (under the transformers names, which are ours). Our modules
are built on the meta device and given those very tensors (:func:`~.reading.build_and_load` with no dtype: nothing
is cast or copied). A renamed tensor is the same object, or a view where our layer has another shape (the VAE's
1x1 attention convolutions become Linear weights); only the identity ``quant_conv`` the single file implies is new
(a few hundred bytes). The tensors keep the owner's dtype and device: :class:`~sonic_core.models.bundle.SonicModels`
never casts a shared part. An owner may keep some layers in another precision (ComfyUI holds its CLIP vision model
in fp16 but its layer norms and projection in fp32, and casts per layer); such a part is run the same way: each layer
casts its floating inputs to its own weights' dtype.

Which tensors are given is the caller's business (the node layer reads them from ComfyUI's objects); a state dict
of another architecture (an SD 1.5 VAE, a ViT-L or ViT-bigG image encoder) is one :class:`SonicWeightsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial

import torch
from torch import nn

from .components import clip_vision_state_dict
from .reading import build_and_load
from .svd_single_file import vae_from_stability

VAE_FIX = "connect the VAE of an Image Only Checkpoint Loader that loaded svd_xt.safetensors (SVD's temporal VAE)"
CLIP_FIX = ("connect the CLIP_VISION of an Image Only Checkpoint Loader that loaded svd_xt.safetensors (SVD's "
            "ViT-H/14 image encoder)")


def _device(state_dict: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(state_dict.values())).device if state_dict else torch.device("cpu")


@torch.no_grad()
def shared_vae(factory: Callable[[], nn.Module], stability_tensors: Mapping[str, torch.Tensor],
               source: str) -> nn.Module:
    """Our VAE (``factory()``) whose parameters are ``stability_tensors`` (SVD's first stage, Stability names
    without ``first_stage_model.``), in their own dtype and on their own device."""
    state_dict = vae_from_stability(stability_tensors, source, VAE_FIX)
    return _per_layer_casts(build_and_load(factory, state_dict, device=_device(stability_tensors), source=source,
                                           fix=VAE_FIX))


@torch.no_grad()
def shared_image_encoder(factory: Callable[[], nn.Module], transformers_tensors: Mapping[str, torch.Tensor],
                         source: str) -> nn.Module:
    """Our CLIP image encoder (``factory()``) whose parameters are ``transformers_tensors`` (a
    ``CLIPVisionModelWithProjection`` state dict), in their own dtype and on their own device."""
    state_dict = clip_vision_state_dict(transformers_tensors)
    return _per_layer_casts(build_and_load(factory, state_dict, device=_device(state_dict), source=source,
                                           fix=CLIP_FIX))


def _cast_inputs(dtype: torch.dtype, module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _per_layer_casts(model: nn.Module) -> nn.Module:
    """``model``, where its parameters mix floating dtypes, with each module that holds parameters casting its
    floating inputs to their dtype first; a model of one dtype is returned as it is."""
    if len({p.dtype for p in model.parameters() if p.is_floating_point()}) > 1:
        for module in model.modules():
            own = [p.dtype for p in module.parameters(recurse=False) if p.is_floating_point()]
            if own:
                module.register_forward_pre_hook(partial(_cast_inputs, own[0]))
    return model


def _storage_spans(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    return sorted({(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in tensors})


def shared_bytes(module: nn.Module, owner_tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
    """``(bytes of module's parameters that lie in the owner's storage, all bytes of its parameters)``: the
    measure of "one copy" (a copy would lie elsewhere)."""
    spans = _storage_spans(owner_tensors)
    shared = total = 0
    for param in module.parameters():
        size = param.numel() * param.element_size()
        total += size
        start = param.data_ptr()
        if any(begin <= start and start + size <= begin + length for begin, length in spans):
            shared += size
    return shared, total
