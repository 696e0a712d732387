"""Prometheus metrics: a scrape is parsed back with prometheus_client's own parser and every value checked."""

from prometheus_client.parser import text_string_to_metric_families

from sonic_core.metering.metrics import SonicMetrics

GIB = 2**30


def scrape(metrics: SonicMetrics) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one rendered scrape."""
    text = metrics.render().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def bucket(samples, name, le):
    return next(v for (n, labels), v in samples.items()
                if n == f"{name}_bucket" and float(dict(labels)["le"]) == le)


def test_fresh_scrape_has_every_metric_at_zero():
    samples = scrape(SonicMetrics())
    assert samples[("sonic_queued_tokens", ())] == 0
    assert samples[("sonic_running_jobs", ())] == 0
    assert samples[("sonic_job_seconds_count", ())] == 0
    assert samples[("sonic_peak_memory_bytes_count", ())] == 0
    names = {name for name, _ in samples}
    assert not any(n.startswith(("sonic_tokens_total", "sonic_failures_total", "sonic_refusals_total")) for n in names)


def test_job_lifecycle_is_scraped_back():
    m = SonicMetrics()
    m.job_refused("budget")
    m.job_refused("budget")
    m.job_refused("tier")
    m.job_queued(100, "standard")
    m.job_queued(700, "api")
    m.job_queued(30, "standard")
    m.job_queued(5, "pro")

    samples = scrape(m)
    assert samples[("sonic_queued_tokens", ())] == 835
    assert samples[("sonic_tokens_total", (("tier", "standard"),))] == 130
    assert samples[("sonic_tokens_total", (("tier", "api"),))] == 700
    assert samples[("sonic_refusals_total", (("reason", "budget"),))] == 2
    assert samples[("sonic_refusals_total", (("reason", "tier"),))] == 1

    m.job_started(100)
    m.job_started(700)
    assert scrape(m)[("sonic_running_jobs", ())] == 2
    m.job_finished(12.5, 3 * GIB)
    m.job_failed("oom")
    m.job_failed("interrupted", started=False, tokens=30)
    m.job_started(5)
    m.job_finished(400.0)  # no memory figure: only the duration is observed

    samples = scrape(m)
    assert samples[("sonic_queued_tokens", ())] == 0
    assert samples[("sonic_running_jobs", ())] == 0
    assert samples[("sonic_failures_total", (("reason", "oom"),))] == 1
    assert samples[("sonic_failures_total", (("reason", "interrupted"),))] == 1
    assert samples[("sonic_job_seconds_count", ())] == 2
    assert samples[("sonic_job_seconds_sum", ())] == 412.5
    assert [bucket(samples, "sonic_job_seconds", le) for le in (10, 20, 300, 600)] == [0, 1, 1, 2]
    assert samples[("sonic_peak_memory_bytes_count", ())] == 1
    assert samples[("sonic_peak_memory_bytes_sum", ())] == 3 * GIB
    assert [bucket(samples, "sonic_peak_memory_bytes", le) for le in (2 * GIB, 4 * GIB)] == [0, 1]


def test_instances_do_not_share_a_registry():
    a, b = SonicMetrics(), SonicMetrics()
    a.job_queued(10, "standard")
    assert scrape(a)[("sonic_queued_tokens", ())] == 10
    assert scrape(b)[("sonic_queued_tokens", ())] == 0
    assert SonicMetrics.content_type.startswith("text/plain; version=")
