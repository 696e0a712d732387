"""The worker pools of the fleet and the rule that picks one for a job.

A pool is a Celery queue (``sonic.<name>``) served by the workers of one kind of GPU node. A job goes to the first
pool, in the order lite -> standard -> hq, whose resolution limit covers the largest ``min_resolution`` of the
job's Sonic Samplers; jobs of the ``pro`` tier (studios) skip ``lite``. ``profile`` is the cost model's device
profile used to predict a job's seconds on that pool (and so its time limit); T4 cards have no measured profile,
so ``lite`` is predicted with the L4 profile, the closest profiled card.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SonicInputError


@dataclass(frozen=True)
class Pool:
    """One pool: its name, the largest resolution (px) it takes (``None``: any), its GPU and cost profile."""

    name: str
    max_resolution: int | None
    gpu: str
    profile: str
    skipped_by_tiers: tuple[str, ...] = ()

    @property
    def queue(self) -> str:
        """The Celery queue its workers consume."""
        return f"sonic.{self.name}"


POOLS = (Pool("lite", 512, "nvidia-tesla-t4", "l4", skipped_by_tiers=("pro",)),
         Pool("standard", 768, "nvidia-a10g", "a10g"),
         Pool("hq", None, "nvidia-a10g", "a10g"))


def pool_named(name: str) -> Pool:
    for pool in POOLS:
        if pool.name == name:
            return pool
    raise SonicInputError(f"unknown pool {name!r}: choose one of {', '.join(pool.name for pool in POOLS)}")


def choose_pool(resolution: int, tier: str) -> Pool:
    """The pool of a job whose largest sampler resolution is ``resolution`` px, sold on ``tier``."""
    for pool in POOLS:
        if tier in pool.skipped_by_tiers:
            continue
        if pool.max_resolution is None or resolution <= pool.max_resolution:
            return pool
    raise SonicInputError(f"no pool takes a {resolution} px job")  # unreachable while the last pool has no limit
