"""The official face detector: a TorchScript YOLOv5m-face (``yoloface_v5m.pt``) behind the I/O contract of MODEL.md §3.1,
with the resize, the ``grids`` input, the row decoding and a pure-torch NMS (no torchvision) written here.

A detector is any callable ``detector(image_rgb: uint8 [H, W, 3]) -> float64 [K, 5]`` returning rows
(x1, y1, width, height, score) in original pixels, sorted by descending score; :mod:`sonic_core.face` uses it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..weights.components import load_yoloface
from .box import check_rgb_image

INPUT_SHORT_SIDE = 416
SIZE_MULTIPLE = 32
STRIDES = (8, 16, 32)
OBJECTNESS_THRESHOLD = 0.5
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.45


def input_size(height: int, width: int) -> tuple[int, int]:
    """(H1, W1) the detector sees: scale the short side to 416, then round each side down to a multiple of 32 after
    adding 31 (so the aspect ratio is kept only approximately; there is no letterbox)."""
    r = INPUT_SHORT_SIDE / min(height, width)
    return (int(int(height * r + 31) // SIZE_MULTIPLE * SIZE_MULTIPLE),
            int(int(width * r + 31) // SIZE_MULTIPLE * SIZE_MULTIPLE))


def make_grids(height: int, width: int) -> list[torch.Tensor]:
    """Cell-index grids for strides 8, 16, 32: [1, 1, ny, nx, 2] float tensors whose last dim is (x, y)."""
    grids = []
    for stride in STRIDES:
        ys, xs = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride), indexing="ij")
        grids.append(torch.stack([xs, ys], dim=-1)[None, None].float())
    return grids


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of corner boxes [N, 4] × [M, 4] → [N, M] (areas without a +1, as torchvision)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    return inter / (area[:, None] + other_area[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by descending score. A box is dropped when its IoU
    with an already kept, higher-scored box exceeds ``iou_threshold`` (torchvision.ops.nms semantics)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def decode(rows: torch.Tensor) -> torch.Tensor:
    """Detector rows [A, 16] (cx, cy, w, h, objectness, 10 landmark values, class score) → kept corner boxes with
    scores [K, 5] (x1, y1, x2, y2, score) in input pixels, by descending score."""
    rows = rows[rows[:, 4] > OBJECTNESS_THRESHOLD]
    score = rows[:, 4] * rows[:, 15]
    centre, size = rows[:, 0:2], rows[:, 2:4]
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    keep = score > SCORE_THRESHOLD
    boxes, score = boxes[keep], score[keep]
    kept = nms(boxes, score, NMS_IOU)
    return torch.cat([boxes[kept], score[kept, None]], dim=1)


class YoloFaceDetector:
    """Runs ``yoloface_v5m.pt`` (TorchScript: ``forward(img [1, 3, H1, W1] RGB in [0, 1], grids) -> [1, A, 16]``),
    read by :func:`sonic_core.weights.components.load_yoloface`."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        self.model = load_yoloface(path, device)
        self.device = torch.device(device)
        self._grids: tuple[tuple[int, int], list[torch.Tensor]] | None = None

    def grids(self, height: int, width: int) -> list[torch.Tensor]:
        if self._grids is None or self._grids[0] != (height, width):
            self._grids = ((height, width), [g.to(self.device) for g in make_grids(height, width)])
        return self._grids[1]

    @torch.inference_mode()
    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """Faces in an RGB uint8 [H, W, 3] image: float64 [K, 5] rows (x1, y1, width, height, score)."""
        check_rgb_image(image_rgb)
        h0, w0 = image_rgb.shape[:2]
        h1, w1 = input_size(h0, w0)
        resized = cv2.resize(image_rgb, (w1, h1), interpolation=cv2.INTER_LINEAR)
        img = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        rows = self.model(img, self.grids(h1, w1))[0].float().cpu()
        found = decode(rows).double()
        sx, sy = w0 / w1, h0 / h1
        x1, y1 = found[:, 0] * sx, found[:, 1] * sy
        width, height = found[:, 2] * sx - x1, found[:, 3] * sy - y1
        return torch.stack([x1, y1, width, height, found[:, 4]], dim=1).numpy()
