"""RIFE ×2 frame interpolation: the IFNet of the HDv3 family (MODEL.md §8.2) with state-dict keys equal to
``rife_ifnet_official_module.tsv`` (less the published ``module.`` prefix) and a batched midpoint. The whole-clip
``interpolate_x2`` and the streaming ``Rife2x`` are in :mod:`sonic_core.interpolation`; ``load_rife`` is in
:mod:`sonic_core.weights.loader`.

Lean where the official code is not (MODEL.md §10.12): pairs are batched, the two directions of every block run as
one batch, and only the final blend is computed (the official forward also blends after each of the first two
levels and throws those images away).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SonicInputError

CHANNELS = 90
BLOCK_IN_PLANES = 3 + 3 + 1 + 4  # two warped images, the mask logit, the 4-channel flow
TEACHER_IN_PLANES = BLOCK_IN_PLANES + 3  # training-only block; its weights are in the file (strict load)
SCALES = (4, 2, 1)  # coarse-to-fine pyramid of the three inference blocks (RIFE "scale 1.0")
SIZE_MULTIPLE = 16  # the scale-4 level works at 1/4 size and halves twice more inside conv0


def conv_prelu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution with bias followed by a per-channel PReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


def upsampler(channels: int, out_channels: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions (×4 in size) with a PReLU between them."""
    half = channels // 2
    return nn.Sequential(nn.ConvTranspose2d(channels, half, 4, 2, 1), nn.PReLU(half),
                         nn.ConvTranspose2d(half, out_channels, 4, 2, 1))


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


def swap_flow(flow: torch.Tensor) -> torch.Tensor:
    """Exchange the two 2-channel halves of a 4-channel flow (toward a ↔ toward b)."""
    return torch.cat([flow[:, 2:], flow[:, :2]], dim=1)


class IFBlock(nn.Module):
    """One pyramid level: estimates a flow and mask-logit update from the warped pair at 1/scale resolution."""

    def __init__(self, in_planes: int, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(conv_prelu(in_planes, channels // 2, 2), conv_prelu(channels // 2, channels, 2))
        self.convblock0 = nn.Sequential(conv_prelu(channels, channels), conv_prelu(channels, channels))
        self.convblock1 = nn.Sequential(conv_prelu(channels, channels), conv_prelu(channels, channels))
        self.convblock2 = nn.Sequential(conv_prelu(channels, channels), conv_prelu(channels, channels))
        self.convblock3 = nn.Sequential(conv_prelu(channels, channels), conv_prelu(channels, channels))
        self.conv1 = upsampler(channels, 4)
        self.conv2 = upsampler(channels, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        if scale != 1:
            x = resize(x, 1.0 / scale)
            flow = resize(flow, 1.0 / scale) * (1.0 / scale)
        feat = self.conv0(torch.cat([x, flow], dim=1))
        for unit in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            feat = unit(feat) + feat
        flow_out, mask_out = self.conv1(feat), self.conv2(feat)
        if scale != 1:
            flow_out = resize(flow_out, scale) * scale
            mask_out = resize(mask_out, scale)
        return flow_out, mask_out


class IFNet(nn.Module):
    """The IFNet of RIFE HDv3 (c = 90): three inference blocks plus the training-only ``block_tea``."""

    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock(BLOCK_IN_PLANES)
        self.block1 = IFBlock(BLOCK_IN_PLANES)
        self.block2 = IFBlock(BLOCK_IN_PLANES)
        self.block_tea = IFBlock(TEACHER_IN_PLANES)
        self._grids: dict[tuple, torch.Tensor] = {}

    def base_grid(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Identity sampling grid [1, H, W, 2] in grid_sample's (x, y) ∈ [-1, 1] coordinates, cached per size."""
        key = (height, width, like.device, like.dtype)
        if key not in self._grids:
            ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
            xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            self._grids[key] = torch.stack([grid_x, grid_y], dim=-1)[None]
        return self._grids[key]

    def warp(self, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Backward-warp ``image`` by a 2-channel pixel flow (bilinear, border padding, align_corners=True)."""
        height, width = image.shape[-2:]
        norm = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], device=flow.device, dtype=flow.dtype)
        grid = self.base_grid(height, width, flow) + flow.permute(0, 2, 3, 1) / norm
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def midpoint(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The frame half-way between ``a`` and ``b`` ([N, 3, H, W] in [0, 1], one pair per row), clamped to [0, 1].

        H and W must be multiples of 16 (every Sonic size is a multiple of 64); :func:`interpolate_x2` pads others.
        """
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise SonicInputError(f"RIFE frames must be two [N, 3, H, W] tensors of one shape, got {tuple(a.shape)} "
                                  f"and {tuple(b.shape)}")
        height, width = a.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise SonicInputError(f"RIFE frame size {width}x{height} is not a multiple of {SIZE_MULTIPLE}; "
                                  f"pad the frames (interpolate_x2 does) or resize them")
        n = a.shape[0]
        flow = a.new_zeros(n, 4, height, width)
        mask = a.new_zeros(n, 1, height, width)
        warped_a, warped_b = a, b
        for block, scale in zip((self.block0, self.block1, self.block2), SCALES):
            # both directions in one batch: (a→b with mask m) and (b→a with −m and the swapped flow)
            x = torch.cat([torch.cat([warped_a, warped_b, mask], 1), torch.cat([warped_b, warped_a, -mask], 1)])
            flow_delta, mask_delta = block(x, torch.cat([flow, swap_flow(flow)]), scale)
            flow = flow + (flow_delta[:n] + swap_flow(flow_delta[n:])) / 2
            mask = mask + (mask_delta[:n] - mask_delta[n:]) / 2
            warped_a, warped_b = self.warp(a, flow[:, :2]), self.warp(b, flow[:, 2:])
        weight = torch.sigmoid(mask)
        return (warped_a * weight + warped_b * (1 - weight)).clamp(0, 1)
