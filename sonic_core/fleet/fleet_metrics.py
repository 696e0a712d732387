"""The fleet's Prometheus metrics, read from the job records at scrape time (so any number of gateway replicas
report the same figures): per pool the queued tokens (the autoscaling signal), queued and running jobs, job
seconds and queue delay histograms; per worker the device memory of its ComfyUI server."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from .records import JobRecords

GAUGES = {"queued_tokens": "Tokens of the jobs waiting in the pool's queue (the autoscaling signal)",
          "queued_jobs": "Jobs waiting in the pool's queue",
          "running_jobs": "Jobs running on the pool's workers"}
HISTOGRAMS = {"job_seconds": "Seconds the pool's finished jobs ran on their ComfyUI server",
              "queue_delay_seconds": "Seconds the pool's jobs waited in the queue before a worker took them"}


class FleetCollector:
    def __init__(self, records: JobRecords) -> None:
        self.records = records

    def collect(self):
        counts = self.records.pool_counts()
        for name, help_text in GAUGES.items():
            family = GaugeMetricFamily(f"sonic_fleet_{name}", help_text, labels=["pool"])
            for pool, values in counts.items():
                family.add_metric([pool], values[name])
            yield family
        for name, help_text in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"sonic_fleet_{name}", help_text, labels=["pool"])
            for pool in counts:
                buckets, total = self.records.histogram(pool, name)
                family.add_metric([pool], buckets, total)
            yield family
        for name, index, help_text in (("used", 0, "Device memory in use"), ("total", 1, "Device memory")):
            family = GaugeMetricFamily(f"sonic_fleet_worker_memory_{name}_bytes",
                                       f"{help_text} on each worker's ComfyUI server, as last reported",
                                       labels=["worker"])
            for worker, values in self.records.worker_memory().items():
                family.add_metric([worker], values[index])
            yield family


def render_metrics(records: JobRecords) -> tuple[bytes, str]:
    """The scrape body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(records))
    return generate_latest(registry), CONTENT_TYPE_LATEST
