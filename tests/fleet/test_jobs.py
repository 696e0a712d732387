"""Batch files as studios write them: rows checked before anything is uploaded (bad rows by line number), mapped onto
any Sonic graph by node class and input name, and the batch's state kept across runs."""

from __future__ import annotations

import json
import shutil

import pytest
from sonic_testing import REPO

from sonic_core.errors import SonicInputError
from sonic_core.fleet.jobs import OUTPUT_FOLDER, check_jobs, job_graph, load_template
from sonic_core.fleet.state import BatchState

ASSETS = REPO / "sonic_core" / "assets"


@pytest.fixture
def folder(tmp_path):
    for name in ("portrait.jpg", "speech.wav"):
        shutil.copy(ASSETS / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_rows_are_checked_before_anything_runs_and_bad_ones_named_by_line(folder):
    (folder / "jobs.csv").write_text(
        "image,audio,output,steps,min_resolution\n"
        "portrait.jpg,speech.wav,a.mp4,2,256\n"
        "portrait.jpg,missing.wav,b.mp4,,\n"
        "portrait.jpg,speech.wav,c.mp4,0,\n"
        "speech.wav,speech.wav,d.mp4,,\n"
        "portrait.jpg,notes.txt,e.mp4,,\n"
        "portrait.jpg,speech.wav,../f.mp4,,\n"
        "portrait.jpg,speech.wav,a.mp4,3,\n")
    jobs, bad = check_jobs(folder / "jobs.csv")
    assert jobs == []  # the two a.mp4 rows clash: neither runs
    reasons = {row.line: row.reason for row in bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "does not exist" in reasons[3] and "steps=0" in reasons[4] and "not a readable image" in reasons[5]
    assert "notes.txt" in reasons[6] and "plain file name" in reasons[7] and "also the output" in reasons[8]
    assert all("\n" not in reason for reason in reasons.values())


def test_jsonl_rows_and_settings_map_onto_the_graph_by_class(folder):
    (folder / "jobs.jsonl").write_text(json.dumps({"image": "portrait.jpg", "audio": "speech.wav", "output": "x.mp4",
                                                   "steps": 4, "seed": 7, "dynamic_scale": 1.1}) + "\n\n")
    (job,), bad = check_jobs(folder / "jobs.jsonl")
    assert bad == [] and abs(job.seconds - 6.594) < 0.01
    full = load_template(REPO / "workflows" / "api" / "sonic_full.json")
    graph = job_graph(full, job, "up/img.jpg", "up/aud.wav")
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["LoadImage"]["image"] == "up/img.jpg" and by_class["LoadAudio"]["audio"] == "up/aud.wav"
    sampler = by_class["SonicSampler"]
    assert (sampler["steps"], sampler["seed"], sampler["dynamic_scale"]) == (4, 7, 1.1)
    assert isinstance(sampler["model"], list)  # links are never overwritten
    assert by_class["SonicPreData"]["duration"] == job.seconds and by_class["SonicPreData"]["fit"] == "error"
    assert by_class["SonicVideoCombine"]["filename_prefix"] == f"{OUTPUT_FOLDER}/{job.key}"
    assert full == load_template(REPO / "workflows" / "api" / "sonic_full.json")  # the template is left as it was


def test_a_graph_without_the_needed_nodes_is_refused(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"1": {"class_type": "LoadImage", "inputs": {}}}))
    with pytest.raises(SonicInputError, match="no SonicSampler node"):
        load_template(tmp_path / "g.json")


def test_state_survives_a_new_process_and_never_forgets_a_job(tmp_path):
    state = BatchState(tmp_path / "state.sqlite")
    state.add("k1", 2, "a.mp4", tokens=5)
    state.update("k1", status="submitting", server="http://a")
    again = BatchState(tmp_path / "state.sqlite")
    assert again.add("k1", 2, "a.mp4").status == "submitting"  # adding a known job keeps what the file knows
    with pytest.raises(SonicInputError, match="status"):
        again.update("k1", status="lost")
