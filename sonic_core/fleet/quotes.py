"""A fleet job's quote before it is queued: its graph (the template filled with the job's inputs and settings),
its tokens and tier verdict by the Token Meter's own graph pricing, its pool, the seconds the cost model predicts
on that pool's GPU, and the time limits the worker runs it under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..metering.graph_pricing import GraphCost, price_graph
from ..metering.tiers import Tier
from .jobs import Job, job_graph
from .pools import Pool, choose_pool

INPUT_FOLDER = "sonic-fleet"  # subfolder of the ComfyUI input and output folders the fleet's files go to
TIME_LIMIT_FACTOR = 4.0  # the soft time limit is this many predicted runs...
TIME_LIMIT_MARGIN_S = 120.0  # ...plus this margin (model loading, a busy server)
HARD_LIMIT_GRACE_S = 60.0  # after the soft limit, time to interrupt the prompt and refund before the kill
UNPREDICTED_LIMIT_S = 3600.0  # the soft limit of a job the cost model has no profile for


@dataclass(frozen=True)
class Quote:
    job_id: str
    graph: dict[str, Any]
    cost: GraphCost
    pool: Pool
    predicted_seconds: float | None

    @property
    def soft_time_limit(self) -> float:
        if self.predicted_seconds is None:
            return UNPREDICTED_LIMIT_S
        return TIME_LIMIT_FACTOR * self.predicted_seconds + TIME_LIMIT_MARGIN_S

    @property
    def time_limit(self) -> float:
        return self.soft_time_limit + HARD_LIMIT_GRACE_S


def input_names(job: Job) -> tuple[str, str]:
    """The names the job's portrait and speech have in the storage (the worker uploads them to its ComfyUI as
    ``INPUT_FOLDER/<job id>-<name>``)."""
    return f"portrait{job.image.suffix.lower()}", f"speech{job.audio.suffix.lower()}"


def quote_job(job_id: str, job: Job, template: dict[str, Any], tier: Tier, device: str | None = None) -> Quote:
    """Price the job's graph, pick its pool by its largest sampler resolution and its tier, and predict its seconds
    on the pool's GPU profile (``device`` overrides it, e.g. ``cpu`` for a fleet of CPU workers)."""
    portrait, speech = input_names(job)
    graph = job_graph(template, job, f"{INPUT_FOLDER}/{job_id}-{portrait}", f"{INPUT_FOLDER}/{job_id}-{speech}",
                      prefix=f"{INPUT_FOLDER}/{job_id}")

    def audio_duration(_: str) -> float:
        return job.seconds

    cost = price_graph(graph, tier=tier, audio_duration=audio_duration, device=device or "cpu")
    pool = choose_pool(max((sampler.resolution for sampler in cost.jobs), default=0), tier.name)
    if device is None:
        cost_on_pool = price_graph(graph, tier=tier, audio_duration=audio_duration, device=pool.profile,
                                   dtype="fp16")
        predicted = cost_on_pool.predicted_seconds
    else:
        predicted = cost.predicted_seconds
    return Quote(job_id, graph, cost, pool, predicted)
