"""The yoloface wrapper end to end against a TorchScript module scripted here with the same I/O contract, its input
size and grids, and the pure-torch NMS against a brute-force reference."""

from typing import List

import numpy as np
import pytest
import torch

from sonic_core.errors import SonicInputError, SonicWeightsError
from sonic_core.face.detect import detect_faces
from sonic_core.face.yolo import YoloFaceDetector, box_iou, input_size, make_grids, nms

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class BrightRegionYolo(torch.nn.Module):
    """Stands in for yoloface_v5m.pt: forward(img, grids) -> [1, A, 16] with A = 3 anchors × Σ cells.

    Row 0 is the box of the bright stride-8 cells, located through the (x, y) grid values; row 1 a slightly shifted
    duplicate with a lower score (NMS must drop it); row 2 a second face; rows 3 and 4 fail the objectness and
    the score thresholds.
    """

    def forward(self, img: torch.Tensor, grids: List[torch.Tensor]) -> torch.Tensor:
        cells = torch.nn.functional.avg_pool2d(img.mean(1, keepdim=True), 8)[0, 0] > 0.5
        grid = grids[0][0, 0]
        xs, ys = grid[..., 0][cells], grid[..., 1][cells]
        x1, x2 = xs.min() * 8, (xs.max() + 1) * 8
        y1, y2 = ys.min() * 8, (ys.max() + 1) * 8
        anchors = 0
        for g in grids:
            anchors += 3 * g.shape[2] * g.shape[3]
        out = torch.zeros(1, anchors, 16)
        face = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        out[0, 0, :4], out[0, 0, 4], out[0, 0, 15] = face, 0.9, 0.95
        out[0, 1, :4], out[0, 1, 4], out[0, 1, 15] = face + torch.tensor([3.0, 2.0, 0.0, 0.0]), 0.8, 0.9
        out[0, 2, :4], out[0, 2, 4], out[0, 2, 15] = torch.tensor([600.0, 350.0, 40.0, 50.0]), 0.95, 0.6
        out[0, 3, :4], out[0, 3, 4], out[0, 3, 15] = torch.tensor([300.0, 300.0, 60.0, 60.0]), 0.45, 1.0
        out[0, 4, :4], out[0, 4, 4], out[0, 4, 15] = torch.tensor([100.0, 300.0, 60.0, 60.0]), 0.6, 0.7
        return out


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolo") / "yoloface_v5m.pt"
    torch.jit.save(torch.jit.script(BrightRegionYolo()), str(path))
    return YoloFaceDetector(path)


def test_input_size_rule():
    assert input_size(512, 512) == (416, 416)
    assert input_size(300, 500) == (416, 704)  # 500·416/300 = 693.3 → floor(724.3 / 32)·32
    assert input_size(1080, 1920) == (416, 768)  # 739.6 + 31 → 770.6 → 768
    assert input_size(101, 99) == (448, 416)  # 424.4 + 31 → 455.4 → 448: rounds up past a multiple


def test_grids_are_x_y_cell_indices():
    grids = make_grids(416, 704)
    assert [tuple(g.shape) for g in grids] == [(1, 1, 52, 88, 2), (1, 1, 26, 44, 2), (1, 1, 13, 22, 2)]
    assert grids[0].dtype == torch.float32
    assert grids[0][0, 0, 5, 7].tolist() == [7.0, 5.0]
    assert grids[2][0, 0, -1, -1].tolist() == [21.0, 12.0]


def test_detector_end_to_end(detector):
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    image[60:180, 100:180] = 255  # a tall bright face-sized block
    boxes = detector(image)
    assert boxes.shape == (2, 5)
    x1, y1, w, h, score = boxes[0]
    assert score == pytest.approx(0.9 * 0.95, abs=1e-6)
    # back in original pixels (stride-8 cells of a 1.39×/1.41× resized input ⇒ within 6 px)
    assert x1 == pytest.approx(100, abs=6) and y1 == pytest.approx(60, abs=6)
    assert w == pytest.approx(80, abs=6) and h == pytest.approx(120, abs=6)
    # second face: centre (600, 350) in 704×416 input pixels → (600·500/704, 350·300/416)
    x1, y1, w, h, score = boxes[1]
    assert score == pytest.approx(0.95 * 0.6, abs=1e-6)
    assert (x1 + w / 2, y1 + h / 2) == pytest.approx((600 * 500 / 704, 350 * 300 / 416), abs=1e-4)
    assert (w, h) == pytest.approx((40 * 500 / 704, 50 * 300 / 416), abs=1e-4)
    faces = detect_faces(image, detector)
    assert faces[0].x1 == boxes[0, 0] and faces[1].score == boxes[1, 4]


def test_detector_rejects_bad_images_and_files(detector, tmp_path):
    with pytest.raises(SonicInputError, match="RGB uint8"):
        detector(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(SonicWeightsError, match="not found"):
        YoloFaceDetector(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(SonicWeightsError, match="not a TorchScript face detector"):
        YoloFaceDetector(junk)


def brute_force_nms(boxes: list, scores: list, threshold: float) -> list:
    def iou(a, b):
        iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
        ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=gen) * 200
    picks = torch.randint(0, 6, (80,), generator=gen)  # clusters, so that suppression really happens
    xy = centres[picks] + torch.randn(80, 2, generator=gen) * 8
    wh = 20 + torch.rand(80, 2, generator=gen) * 30
    boxes = torch.cat([xy, xy + wh], 1).double()
    scores = torch.rand(80, generator=gen).double()
    want = brute_force_nms(boxes.tolist(), scores.tolist(), 0.45)
    got = nms(boxes, scores, 0.45).tolist()
    assert got == want
    assert 6 <= len(got) < 80


def test_box_iou_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0])
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.45).tolist() == []
