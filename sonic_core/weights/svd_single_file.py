"""Stability's single-file SVD checkpoint (``svd_xt*.safetensors``) -> our VAE and CLIP image-encoder state dicts.

The file (what ComfyUI users already have) stores the sgm / OpenCLIP modules under their original names:
``first_stage_model.*`` (an LDM ``Encoder`` and the temporal ``VideoDecoder``), ``conditioner.embedders.0.open_clip.
model.visual.*`` (OpenCLIP ViT-H/14) and, never read here, ``model.diffusion_model.*`` (the 3 GB UNet that Sonic's
``unet.pth`` replaces) and other conditioner parts. Only the tensors of the first two prefixes are read.

The renames are data: one table of ``(our name, Stability name, transform)`` rules per part, where ``{i}``/``{j}``
are block indices and ``{ri}`` is the reversed decoder level (LDM builds ``decoder.up`` from the lowest resolution,
so ``up.{levels-1-i}`` is the ``i``-th block to run = ``up_blocks.{i}``). The same table maps both ways:
:func:`from_stability` reads a checkpoint, :func:`to_stability` writes Stability names (used to build test files).

Transforms: ``squeeze`` (LDM attention q/k/v/proj_out are 1x1 convs, ours are Linear), ``transpose`` (OpenCLIP's
``proj`` is ``[width, dim]`` applied as ``x @ proj``; a Linear weight is ``[dim, width]``), ``q``/``k``/``v`` (rows
``[0:d]``, ``[d:2d]``, ``[2d:3d]`` of ``attn.in_proj_weight``/``in_proj_bias``: ``torch.nn.MultiheadAttention``
stacks q, k, v in that order).

Which file is an SVD checkpoint is decided by its keys (:func:`single_file_problem`, header only), not its name:
it must hold the temporal decoder (``svd_xt_image_decoder.safetensors``, a frame-by-frame image decoder, does not).

sgm's ``AutoencodingEngine`` (SVD's first stage) has no ``quant_conv``: its encoder output is the posterior's
moments directly. When the file has no ``first_stage_model.quant_conv`` the VAE gets an identity 1x1 conv (weight
``eye``, bias 0), which computes exactly what the single file's own first stage computes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SonicWeightsError
from .reading import DEFAULT_FIX, read_state_dict, safetensors_keys

VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
# Some repacked files carry an LDM post_quant_conv; neither sgm's AutoencodingEngine nor diffusers'
# AutoencoderKLTemporalDecoder (whose decode our VAE follows) applies one, so those tensors are not read.
UNUSED_VAE_PREFIX = VAE_PREFIX + "post_quant_conv."
TEMPORAL_DECODER = (VAE_PREFIX + "decoder.", ".time_stack.")  # a key with both is a temporal decoder block
QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Rule:
    """``ours`` <-> ``theirs`` (relative to the part's prefix) with a transform of the tensor on the way in."""

    ours: str
    theirs: str
    transform: str = "copy"  # copy | squeeze | transpose | q | k | v

    def pattern(self, side: str) -> re.Pattern:
        template = re.escape(getattr(self, side))
        for name in ("ri", "i", "j"):
            template = template.replace(re.escape("{" + name + "}"), rf"(?P<{name}>\d+)")
        return re.compile(template)


def _weight_bias(ours: str, theirs: str, weight_transform: str = "copy") -> list[Rule]:
    return [Rule(f"{ours}.weight", f"{theirs}.weight", weight_transform), Rule(f"{ours}.bias", f"{theirs}.bias")]


RESNET_LEAVES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                 "conv_shortcut": "nin_shortcut"}
# sgm VideoResBlock.time_stack is an openaimodel ResBlock: in_layers = [norm, SiLU, conv], out_layers = [norm, SiLU,
# dropout, conv], hence the indices.
TEMPORAL_LEAVES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3"}
ATTENTION_LEAVES = (("group_norm", "norm", "copy"), ("to_q", "q", "squeeze"), ("to_k", "k", "squeeze"),
                    ("to_v", "v", "squeeze"), ("to_out.0", "proj_out", "squeeze"))


def _resnet(ours: str, theirs: str) -> list[Rule]:
    return [r for a, b in RESNET_LEAVES.items() for r in _weight_bias(f"{ours}.{a}", f"{theirs}.{b}")]


def _temporal_resnet(ours: str, theirs: str) -> list[Rule]:
    rules = _resnet(f"{ours}.spatial_res_block", theirs)
    rules += [r for a, b in TEMPORAL_LEAVES.items()
              for r in _weight_bias(f"{ours}.temporal_res_block.{a}", f"{theirs}.time_stack.{b}")]
    return rules + [Rule(f"{ours}.time_mixer.mix_factor", f"{theirs}.mix_factor")]


def _attention(ours: str, theirs: str) -> list[Rule]:
    return [r for a, b, t in ATTENTION_LEAVES for r in _weight_bias(f"{ours}.{a}", f"{theirs}.{b}", t)]


VAE_RULES: tuple[Rule, ...] = tuple(
    _weight_bias("encoder.conv_in", "encoder.conv_in")
    + _resnet("encoder.down_blocks.{i}.resnets.{j}", "encoder.down.{i}.block.{j}")
    + _weight_bias("encoder.down_blocks.{i}.downsamplers.0.conv", "encoder.down.{i}.downsample.conv")
    + _resnet("encoder.mid_block.resnets.0", "encoder.mid.block_1")
    + _attention("encoder.mid_block.attentions.0", "encoder.mid.attn_1")
    + _resnet("encoder.mid_block.resnets.1", "encoder.mid.block_2")
    + _weight_bias("encoder.conv_norm_out", "encoder.norm_out")
    + _weight_bias("encoder.conv_out", "encoder.conv_out")
    + _weight_bias("quant_conv", "quant_conv")
    + _weight_bias("decoder.conv_in", "decoder.conv_in")
    + _temporal_resnet("decoder.mid_block.resnets.0", "decoder.mid.block_1")
    + _attention("decoder.mid_block.attentions.0", "decoder.mid.attn_1")
    + _temporal_resnet("decoder.mid_block.resnets.1", "decoder.mid.block_2")
    + _temporal_resnet("decoder.up_blocks.{i}.resnets.{j}", "decoder.up.{ri}.block.{j}")
    + _weight_bias("decoder.up_blocks.{i}.upsamplers.0.conv", "decoder.up.{ri}.upsample.conv")
    + _weight_bias("decoder.conv_norm_out", "decoder.norm_out")
    + _weight_bias("decoder.conv_out", "decoder.conv_out")
    + _weight_bias("decoder.time_conv_out", "decoder.conv_out.time_mix_conv"))

_LAYER, _BLOCK = "vision_model.encoder.layers.{i}", "transformer.resblocks.{i}"
CLIP_RULES: tuple[Rule, ...] = tuple(
    [Rule("vision_model.embeddings.class_embedding", "class_embedding"),
     Rule("vision_model.embeddings.patch_embedding.weight", "conv1.weight"),
     Rule("vision_model.embeddings.position_embedding.weight", "positional_embedding")]
    + _weight_bias("vision_model.pre_layrnorm", "ln_pre")
    + [Rule(f"{_LAYER}.self_attn.{x}_proj.{p}", f"{_BLOCK}.attn.in_proj_{p}", x)
       for x in QKV for p in ("weight", "bias")]
    + _weight_bias(f"{_LAYER}.self_attn.out_proj", f"{_BLOCK}.attn.out_proj")
    + _weight_bias(f"{_LAYER}.layer_norm1", f"{_BLOCK}.ln_1")
    + _weight_bias(f"{_LAYER}.mlp.fc1", f"{_BLOCK}.mlp.c_fc")
    + _weight_bias(f"{_LAYER}.mlp.fc2", f"{_BLOCK}.mlp.c_proj")
    + _weight_bias(f"{_LAYER}.layer_norm2", f"{_BLOCK}.ln_2")
    + _weight_bias("vision_model.post_layernorm", "ln_post")
    + [Rule("visual_projection.weight", "proj", "transpose")])


def _fill(template: str, groups: Mapping[str, str], levels: int) -> str:
    values = dict(groups)
    if "ri" in values:  # one side counts decoder levels from the top, the other from the bottom
        values["i"] = str(levels - 1 - int(values.pop("ri")))
    elif "i" in values:
        values["ri"] = str(levels - 1 - int(values["i"]))
    return template.format(**values)


def _decoder_levels(keys: Iterable[str], pattern: str) -> int:
    levels = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(levels) + 1 if levels else 0


def _forward(rule: Rule, tensor: torch.Tensor, name: str) -> torch.Tensor:
    if rule.transform == "squeeze":
        if tensor.ndim != 4 or tensor.shape[2:] != (1, 1):
            raise SonicWeightsError(f"{name} has shape {tuple(tensor.shape)}, expected a 1x1 convolution")
        return tensor.reshape(tensor.shape[:2])
    if rule.transform == "transpose":
        return tensor.t().contiguous()
    if rule.transform in QKV:
        if tensor.shape[0] % 3:
            raise SonicWeightsError(f"{name} has {tensor.shape[0]} rows, expected q, k and v stacked (3·width)")
        return tensor.chunk(3, dim=0)[QKV.index(rule.transform)]
    return tensor


def from_stability(tensors: Mapping[str, torch.Tensor], rules: Iterable[Rule], source: str,
                   fix: str = DEFAULT_FIX) -> dict[str, torch.Tensor]:
    """Rename a part's tensors (names without the part prefix) to ours; an unknown name is a SonicWeightsError."""
    rules = tuple(rules)
    levels = _decoder_levels(tensors, r"decoder\.up\.(\d+)\.")
    compiled = [(rule, rule.pattern("theirs")) for rule in rules]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        hits = [(rule, m) for rule, pattern in compiled if (m := pattern.fullmatch(name))]
        if not hits:
            raise SonicWeightsError(f"{source}: tensor {name!r} is not part of an SVD checkpoint's VAE or CLIP "
                                    f"image encoder (unknown name); use the official svd_xt file ({fix})")
        for rule, match in hits:
            out[_fill(rule.ours, match.groupdict(), levels)] = _forward(rule, tensor, name)
    return out


def to_stability(state_dict: Mapping[str, torch.Tensor], rules: Iterable[Rule]) -> dict[str, torch.Tensor]:
    """The inverse renames: our state dict -> Stability names (q/k/v merged back, 1x1 convs restored)."""
    rules = tuple(rules)
    levels = _decoder_levels(state_dict, r"decoder\.up_blocks\.(\d+)\.")
    compiled = [(rule, rule.pattern("ours")) for rule in rules]
    out: dict[str, torch.Tensor] = {}
    stacks: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        rule, match = next(((r, m) for r, p in compiled if (m := p.fullmatch(name))), (None, None))
        if rule is None:
            raise ValueError(f"{name!r} has no Stability name in these rules")
        theirs = _fill(rule.theirs, match.groupdict(), levels)
        if rule.transform in QKV:
            stacks.setdefault(theirs, {})[rule.transform] = tensor
        elif rule.transform == "squeeze":
            out[theirs] = tensor[:, :, None, None]
        elif rule.transform == "transpose":
            out[theirs] = tensor.t().contiguous()
        else:
            out[theirs] = tensor
    out.update({name: torch.cat([parts[x] for x in QKV]) for name, parts in stacks.items()})
    return out


def _with_quant_conv(vae: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "quant_conv.weight" in vae or "encoder.conv_out.weight" not in vae:
        return vae
    moments = vae["encoder.conv_out.weight"]
    channels = moments.shape[0]
    eye = torch.eye(channels, dtype=moments.dtype).reshape(channels, channels, 1, 1)
    return {**vae, "quant_conv.weight": eye, "quant_conv.bias": torch.zeros(channels, dtype=moments.dtype)}


def single_file_problem(keys: Iterable[str]) -> str | None:
    """Why a checkpoint with these tensor names cannot serve as SVD's VAE + CLIP image encoder; ``None`` if it can."""
    keys = list(keys)
    for prefix, what in ((VAE_PREFIX, "VAE"), (CLIP_PREFIX, "CLIP image encoder")):
        if not any(k.startswith(prefix) for k in keys):
            return f"no {prefix}* tensors ({what}): not a Stable Video Diffusion checkpoint"
    decoder, temporal = TEMPORAL_DECODER
    if not any(k.startswith(decoder) and temporal in k for k in keys):
        return (f"its VAE has no temporal decoder ({decoder}*{temporal}*): an image-decoder variant such as "
                f"svd_xt_image_decoder, not the svd_xt Sonic uses")
    return None


def vae_from_stability(tensors: Mapping[str, torch.Tensor], source: str,
                       fix: str = DEFAULT_FIX) -> dict[str, torch.Tensor]:
    """Our VAE state dict from the first stage's tensors under their Stability names without the
    ``first_stage_model.`` prefix, which is also how ComfyUI's loaded SVD VAE names them. Renamed tensors are the
    given ones or views of them (a 1x1 convolution squeezed to a Linear weight): no tensor is copied."""
    used = {k: v for k, v in tensors.items() if not k.startswith(UNUSED_VAE_PREFIX[len(VAE_PREFIX):])}
    return _with_quant_conv(from_stability(used, VAE_RULES, source, fix))


def read_single_file(path: Path, fix: str = DEFAULT_FIX) -> dict[str, dict[str, torch.Tensor]]:
    """``{"vae", "image_encoder"}`` state dicts from a Stability ``svd_xt*.safetensors``, reading only those tensors."""
    names = [k for k in safetensors_keys(path, fix) if not k.startswith(UNUSED_VAE_PREFIX)]
    problem = single_file_problem(names)
    if problem:
        raise SonicWeightsError(f"{path}: {problem}; use svd_xt.safetensors or the diffusers folder ({fix})")
    stored = {prefix: read_state_dict(path, keys=[k for k in names if k.startswith(prefix)], fix=fix)
              for prefix in (VAE_PREFIX, CLIP_PREFIX)}
    vae, clip = ({k[len(prefix):]: v for k, v in stored[prefix].items()} for prefix in (VAE_PREFIX, CLIP_PREFIX))
    return {"vae": vae_from_stability(vae, str(path), fix),
            "image_encoder": from_stability(clip, CLIP_RULES, str(path), fix)}
