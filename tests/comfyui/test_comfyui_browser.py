"""Every template as a user meets it in the real ComfyUI web page (headless Chromium): picked in the template
browser by its title and thumbnail, run, and its Token Meter's predicted time set beside the measured one."""

import json
import os
import platform
import time

import pytest
from comfyui_harness import ARTIFACTS, PACK_NAME
from sonic_testing import REPO, TEMPLATE_TITLES, template_ui_path

from sonic_core.metering.cost import load_coefficients

pytestmark = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]

FRONTEND_ONLY_INPUTS = {"audioUI"}  # widgets the frontend adds to the prompt that are not node inputs
ACCURACY_FILE = REPO / "bench" / "results" / "token_meter_accuracy.json"
PACK_URLS = (f"/api/workflow_templates/{PACK_NAME}/", f"/extensions/{PACK_NAME}/", "/sonic/")
# Written by each run, to be copied next to the templates / into docs/ when they change (see README "Templates").
FRESH_THUMBNAILS = ARTIFACTS / "thumbnails"
FRESH_METER_SHOT = ARTIFACTS / "token_meter.png"


def comparable(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"],
                      "inputs": {k: v for k, v in node["inputs"].items() if k not in FRONTEND_ONLY_INPUTS}}
            for node_id, node in prompt.items()}


def run_seconds(entry: dict) -> float:
    """Seconds from the prompt's start to its end, by the server's own timestamps in ``/history``."""
    stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def cached_nodes(entry: dict) -> list[str]:
    """Ids of the nodes whose outputs a prompt took from the server's cache (``/history``'s execution_cached)."""
    return [node for name, data in entry["status"]["messages"] if name == "execution_cached" for node in data["nodes"]]


def calibration_threads(profile: str) -> int:
    """Threads the profile's machine ran torch with when it was calibrated (its prediction is that machine's wall
    time with those cores to itself)."""
    return load_coefficients().profiles[profile].info["threads"]


def record_accuracy(template: str, row: dict) -> None:
    """Write one template's predicted and measured seconds into ``bench/results/token_meter_accuracy.json``."""
    results = json.loads(ACCURACY_FILE.read_text()) if ACCURACY_FILE.exists() else {}
    results.setdefault("templates", {})[template] = row
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    results["measured"] = (
        "ComfyUI 0.3.75 --cpu, one run each, started from the template browser in headless Chromium. "
        "measured_wall_s: /history execution_start to execution_success; server_cpu_s: the server process's CPU "
        "seconds over the run (/proc, user + system, children included); measured_busy_s = server_cpu_s / the "
        "threads the profile was calibrated with: the run's wall time with those cores to itself, which a shared "
        "machine's wall time is not (its load_average beside it)")
    ACCURACY_FILE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("template", sorted(TEMPLATE_TITLES))
def test_template_from_the_template_browser_runs_and_its_meter_predicts_it(comfyui_browser, template):
    browser = comfyui_browser
    api_twin = REPO / "workflows" / "api" / f"{template}.json"
    title = template_ui_path(api_twin).stem
    card = browser.open_template(title)
    assert card["title"] == card["description"] == title and card["thumbnail"]["width"] >= 200, card
    assert (200, f"{browser.server.url}/api/workflow_templates/{PACK_NAME}/{title}.jpg") in browser.responses
    assert browser.visible_dialogs() == []
    assert comparable(browser.api_prompt()) == comparable(json.loads(api_twin.read_text()))

    estimate = browser.estimate()
    browser.server.forget_outputs()
    cpu_before, load_before = browser.server.cpu_seconds(), os.getloadavg()[0]
    entry = browser.queue_and_wait()
    cpu_seconds, load = browser.server.cpu_seconds() - cpu_before, max(load_before, os.getloadavg()[0])
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    assert cached_nodes(entry) == [], "a measured run must run every node"
    assert any("animated" in out for out in entry["outputs"].values())
    browser.thumbnail(FRESH_THUMBNAILS / f"{title}.jpg")

    pack_failures = [(status, url) for status, url in browser.responses
                     if status >= 400 and any(part in url for part in PACK_URLS)]
    assert pack_failures == []
    assert [w for w in browser.console_warnings if "internal module" in w or "sonic" in w.lower()] == []

    if not estimate["jobs"]:  # no Sonic Sampler: nothing to predict
        return
    predicted, measured = estimate["predicted_seconds"], run_seconds(entry)
    (job,) = estimate["jobs"]
    threads = calibration_threads(job["predicted_profile"])
    busy = cpu_seconds / threads
    record_accuracy(template, {"predicted_s": round(predicted, 2), "measured_wall_s": round(measured, 2),
                               "server_cpu_s": round(cpu_seconds, 2), "calibration_threads": threads,
                               "measured_busy_s": round(busy, 2), "ratio_busy_to_predicted": round(busy / predicted, 3),
                               "ratio_wall_to_predicted": round(measured / predicted, 3),
                               "load_average": round(load, 2), "profile": job["predicted_profile"],
                               "device": estimate["device"], "date": time.strftime("%Y-%m-%d", time.gmtime())})
    assert predicted / 2 <= busy <= predicted * 2, (predicted, busy, measured, load)

    if "SonicTokenMeter" in browser.node_types_in_graph():
        shown = browser.node_screenshot("SonicTokenMeter", FRESH_METER_SHOT)
        assert shown["text"].startswith("last run: ") and f"~{round(predicted)} s" in shown["text"], shown
        assert estimate["device"] in shown["text"]
        assert (shown["scrollHeight"], shown["scrollWidth"]) == (shown["clientHeight"], shown["clientWidth"]), shown

