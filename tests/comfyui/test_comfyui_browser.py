"""Every UI template in the real ComfyUI web page (headless Chromium): loads cleanly, queues, runs."""

import json

import pytest
from sonic_testing import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.browser]

UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
FRONTEND_ONLY_INPUTS = {"audioUI"}  # widgets the frontend adds to the prompt that are not node inputs


def comparable(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"],
                      "inputs": {k: v for k, v in node["inputs"].items() if k not in FRONTEND_ONLY_INPUTS}}
            for node_id, node in prompt.items()}


@pytest.mark.parametrize("workflow", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_template_loads_without_dialogs_and_runs(comfyui_browser, workflow):
    dialogs = comfyui_browser.load_workflow(json.loads(workflow.read_text()))
    assert dialogs == [], f"loading {workflow.name} raised: {dialogs}"
    assert comfyui_browser.node_types_in_graph()
    api_twin = REPO / "workflows" / "api" / workflow.name
    if api_twin.exists():  # the UI file is the drag-and-drop form of the API template
        assert comparable(comfyui_browser.api_prompt()) == comparable(json.loads(api_twin.read_text()))
    entry = comfyui_browser.queue_and_wait()
    comfyui_browser.fit_view()
    shot = comfyui_browser.screenshot(f"browser_{workflow.stem}")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    assert any("animated" in out for out in entry["outputs"].values())
    assert shot.stat().st_size > 10_000
