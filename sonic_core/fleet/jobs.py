"""A batch of clips as a studio writes it: a CSV or JSONL file, one row per clip (``image``, ``audio``, ``output`` and
any knob of :class:`~sonic_core.settings.SonicSettings` as an optional column), checked row by row before anything
is uploaded, and each row turned into an API-format graph from a template.

Rows are mapped onto the template's nodes by class and input name, never by node id, so any graph built from the
pack's nodes works: the image goes into every ``LoadImage``, the audio into every ``LoadAudio``, each knob into
every Sonic node that has an input of that name, and the output name into the ``SonicVideoCombine`` prefix.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import node_ids
from ..audio import FIT_MODES
from ..errors import SonicError, SonicInputError
from ..inputs import prepare_inputs
from ..paths import read_config
from ..settings import SonicSettings

REQUIRED_COLUMNS = ("image", "audio", "output")
OPTIONAL_COLUMNS = ("fit",)
SONIC_NODES = frozenset({node_ids.PREDATA, node_ids.SAMPLER, node_ids.LIPSYNC_ALIGN, node_ids.MOTION_SMOOTH,
                         node_ids.VIDEO_COMBINE})
TEMPLATES = Path(__file__).resolve().parents[2] / "workflows" / "api"
DEFAULT_TEMPLATE = TEMPLATES / "sonic_basic.json"
OUTPUT_FOLDER = "sonic-queue"  # subfolder of the server's output folder the batch's videos are written to


@dataclass
class Job:
    """One row of a batch: where it came from (``line``), its files, its output name and its knob values."""

    line: int
    image: Path
    audio: Path
    output: str
    knobs: dict[str, Any] = field(default_factory=dict)
    fit: str = "error"
    seconds: float = 0.0  # the audio's length, measured when the row is checked

    @property
    def key(self) -> str:
        """A stable id of the job's content: the same row in a later run is the same job."""
        text = json.dumps([str(self.image.resolve()), str(self.audio.resolve()), self.output, self.fit,
                           sorted(self.knobs.items())], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class BadRow:
    """A row that cannot run, with its line number in the jobs file and the reason."""

    line: int
    reason: str


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of a CSV (header line first) or JSONL file (one object a line; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SonicInputError(f"jobs file {str(path)!r} does not exist: pass a CSV or JSONL file of clips")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SonicInputError(f"jobs file {path.name}, line {number}: not a JSON object ({exc})") from None
            if not isinstance(row, dict):
                raise SonicInputError(f"jobs file {path.name}, line {number}: not a JSON object")
            rows.append((number, row))
        return rows
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SonicInputError(f"jobs file {path.name}: the header lacks {', '.join(missing)}; the columns are "
                              f"{', '.join(REQUIRED_COLUMNS)} and any setting ({', '.join(SonicSettings.knob_names())})")
    return [(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}) for row in reader]


def _knob_value(name: str, value: Any) -> Any:
    """A CSV cell (text) as the knob's type; JSON values pass as they are."""
    if not isinstance(value, str) or name == "expand_ratio":
        return value
    if SonicSettings.knob(name).type is bool:
        return value.strip().lower() == "true"
    try:
        return float(value)  # SonicSettings makes whole numbers ints and refuses 2.5 steps
    except ValueError:
        raise SonicInputError(f"{name}={value!r} is not a number") from None


def parse_job(line: int, row: dict[str, Any], base: Path) -> Job:
    """A checked :class:`Job` from one row: files exist and are a readable portrait with a face and readable
    speech, every setting is in range; relative paths are taken from ``base`` (the jobs file's folder)."""
    unknown = set(row) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS) - set(SonicSettings.knob_names())
    if unknown:
        raise SonicInputError(f"unknown column(s) {', '.join(sorted(unknown))}: use {', '.join(REQUIRED_COLUMNS)}, "
                              f"fit or a setting name")
    for column in REQUIRED_COLUMNS:
        if not str(row.get(column, "")).strip():
            raise SonicInputError(f"{column} is empty")
    output = str(row["output"]).strip()
    if Path(output).name != output or not output.lower().endswith(".mp4"):
        raise SonicInputError(f"output {output!r} must be a plain file name ending in .mp4 (it is written to --out)")
    fit = str(row.get("fit", "error"))
    if fit not in FIT_MODES:
        raise SonicInputError(f"fit={fit!r}: use one of {', '.join(FIT_MODES)}")
    knobs = {name: _knob_value(name, value) for name, value in row.items() if name in SonicSettings.knob_names()}
    settings = SonicSettings(**knobs)
    image, audio = (base / str(row[c]).strip() for c in ("image", "audio"))
    inputs = prepare_inputs(image, audio, settings, fit=fit)
    return Job(line, image, audio, output, knobs, fit, inputs.speech.seconds)


def check_jobs(path: str | Path) -> tuple[list[Job], list[BadRow]]:
    """Every row checked: the jobs that can run, and the bad rows with their line numbers and reasons. Two rows
    with the same output name are both refused (one would overwrite the other)."""
    path = Path(path)
    jobs, bad = [], []
    for line, row in read_rows(path):
        try:
            jobs.append(parse_job(line, row, path.parent))
        except SonicError as exc:
            bad.append(BadRow(line, str(exc)))
    outputs: dict[str, list[Job]] = {}
    for job in jobs:
        outputs.setdefault(job.output, []).append(job)
    clashes = {id(job) for same in outputs.values() if len(same) > 1 for job in same}
    bad += [BadRow(job.line, f"output {job.output!r} is also the output of another row") for job in jobs
            if id(job) in clashes]
    return [job for job in jobs if id(job) not in clashes], sorted(bad, key=lambda row: row.line)


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    """An API-format graph (``workflows/api/*.json`` or a user's export) with at least one Sonic Sampler."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    return check_template(read_config(path, "graph", "json", "pass an API-format JSON export"), f"graph {path.name}")


def check_template(graph: Any, what: str = "the graph") -> dict[str, Any]:
    """``graph`` if it is an API-format graph with the nodes a job fills in, else one line naming what lacks."""
    if not isinstance(graph, dict) or not all(isinstance(node, dict) for node in graph.values()):
        raise SonicInputError(f"{what} is not an API-format graph (an object of nodes): export it with "
                              "File > Export (API)")
    classes = [node.get("class_type") for node in graph.values()]
    for needed in (node_ids.SAMPLER, node_ids.VIDEO_COMBINE, "LoadImage", "LoadAudio"):
        if needed not in classes:
            raise SonicInputError(f"{what} has no {needed} node: export an API-format graph built from "
                                  "the Sonic templates (File > Export (API))")
    return graph


def job_graph(template: dict[str, Any], job: Job, image_name: str, audio_name: str,
              prefix: str | None = None) -> dict[str, Any]:
    """The template with this job's uploaded inputs, settings and output prefix set, by class and input name. The
    PreData ``duration`` is the audio's measured length (or the job's own), so the graph can be priced without
    the server reading the file. The video is written under ``prefix`` (default the job's key in the batch's
    output folder)."""
    graph = copy.deepcopy(template)
    values = {"duration": job.seconds, "fit": job.fit, **job.knobs}
    for node in graph.values():
        inputs, kind = node.setdefault("inputs", {}), node.get("class_type")
        if kind == "LoadImage":
            inputs["image"] = image_name
        elif kind == "LoadAudio":
            inputs["audio"] = audio_name
        elif kind in SONIC_NODES:
            for name, value in values.items():
                if name in inputs and not isinstance(inputs[name], list):
                    inputs[name] = value
            if kind == node_ids.VIDEO_COMBINE:
                inputs["filename_prefix"] = prefix or f"{OUTPUT_FOLDER}/{job.key}"
    return graph
