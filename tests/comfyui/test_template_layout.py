"""The UI templates as files (no server): named by their titles, each with its thumbnail and API twin, and laid out
so that no node (title bar, widgets, preview) covers another."""

import json
from pathlib import Path

import pytest
from comfyui_harness import PREVIEW_HEIGHTS, TITLE_HEIGHT
from sonic_testing import REPO

UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))

Rectangle = tuple[float, float, float, float]  # left, top, right, bottom


def node_rectangle(node: dict) -> Rectangle:
    """The canvas area a node takes: its title bar above ``pos``, its body (``size``) and the preview below it."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + width, y + height + PREVIEW_HEIGHTS.get(node["type"], 0)


def overlapping(nodes: list[dict]) -> list[tuple[str, str]]:
    """Pairs of nodes (by type and id) whose rectangles share any area."""
    pairs = []
    for index, first in enumerate(nodes):
        a = node_rectangle(first)
        for second in nodes[index + 1:]:
            b = node_rectangle(second)
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                pairs.append((f"{first['type']} {first['id']}", f"{second['type']} {second['id']}"))
    return pairs


@pytest.mark.parametrize("workflow", UI_WORKFLOWS, ids=lambda p: p.stem.split(",")[0])
def test_no_node_covers_another(workflow: Path):
    nodes = json.loads(workflow.read_text())["nodes"]
    assert len(nodes) >= 3
    assert overlapping(nodes) == []


def test_the_overlap_check_sees_a_preview_covered():
    """Load Image's picture is below its widgets: a node placed just under its body overlaps it."""
    image = {"id": 1, "type": "LoadImage", "pos": [40, 50], "size": [290, 102]}
    audio = {"id": 2, "type": "LoadAudio", "pos": [40, 50 + 102 + TITLE_HEIGHT + 10], "size": [290, 136]}
    assert overlapping([image, audio]) == [("LoadImage 1", "LoadAudio 2")]
    audio["pos"][1] += PREVIEW_HEIGHTS["LoadImage"]
    assert overlapping([image, audio]) == []


def test_every_template_has_its_thumbnail():
    for workflow in UI_WORKFLOWS:
        thumbnail = workflow.with_suffix(".jpg")  # the name the template browser asks for
        assert thumbnail.exists(), f"{thumbnail.name} is missing: run tests/comfyui/test_comfyui_browser.py"
        assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
