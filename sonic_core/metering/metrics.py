"""Prometheus metrics of a Sonic service, fed by queue and ledger events and scraped as text.

Lifecycle of a job as the metrics see it: ``job_queued`` (accepted; its tokens join the queued-tokens gauge) ->
``job_started`` (its tokens leave the queue, it counts as running) -> ``job_finished`` or ``job_failed``. A job
that is turned away before it is queued calls ``job_refused`` only; one that fails while still queued (cancelled,
invalid input found late) calls ``job_failed(reason, started=False, tokens=...)``.

``sonic_queued_tokens`` is the autoscaling signal: the work waiting, in tokens. Reasons are label values, so keep
them to a short fixed vocabulary ("budget", "tier", "interrupted", "oom", "error", ...), never free text.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

JOB_SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
PEAK_BYTES_BUCKETS = tuple(gib * 2**30 for gib in (0.5, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 141))


class SonicMetrics:
    """The service's metrics in a registry of their own (so several instances and tests never collide)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str = "sonic") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        common = {"namespace": namespace, "registry": self.registry}
        self.queued_tokens = Gauge("queued_tokens", "Tokens of the jobs waiting in the queue (autoscaling signal)",
                                   **common)
        self.running_jobs = Gauge("running_jobs", "Jobs being generated now", **common)
        self.tokens = Counter("tokens", "Tokens of the jobs accepted into the queue, by tier", ["tier"], **common)
        self.job_seconds = Histogram("job_seconds", "Wall-clock seconds of the finished jobs",
                                     buckets=JOB_SECONDS_BUCKETS, **common)
        self.peak_memory_bytes = Histogram("peak_memory_bytes", "Peak accelerator (or host) memory of the finished "
                                           "jobs, in bytes", buckets=PEAK_BYTES_BUCKETS, **common)
        self.failures = Counter("failures", "Jobs that were accepted and then failed, by reason", ["reason"],
                                **common)
        self.refusals = Counter("refusals", "Jobs turned away before they were queued, by reason", ["reason"],
                                **common)

    def job_queued(self, tokens: int, tier: str) -> None:
        self.queued_tokens.inc(tokens)
        self.tokens.labels(tier=tier).inc(tokens)

    def job_started(self, tokens: int) -> None:
        self.queued_tokens.dec(tokens)
        self.running_jobs.inc()

    def job_finished(self, seconds: float, peak_bytes: int | None = None) -> None:
        self.running_jobs.dec()
        self.job_seconds.observe(seconds)
        if peak_bytes is not None:
            self.peak_memory_bytes.observe(peak_bytes)

    def job_failed(self, reason: str, *, started: bool = True, tokens: int = 0) -> None:
        """A running job failed, or (``started=False``) a queued one left the queue with its ``tokens``."""
        self.failures.labels(reason=reason).inc()
        if started:
            self.running_jobs.dec()
        else:
            self.queued_tokens.dec(tokens)

    def job_refused(self, reason: str) -> None:
        self.refusals.labels(reason=reason).inc()

    def render(self) -> bytes:
        """The scrape body, in the Prometheus text format (serve it with :attr:`content_type`)."""
        return generate_latest(self.registry)
