"""The service's own metric series export as prometheus-client would, and merge by summing."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from passcode import metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    """Observations on a bound count in that bound's bucket (``le``), above every bound only
    in +Inf; buckets, count and sum parse back from the exposition."""
    registry = CollectorRegistry(auto_describe=False)
    histogram = metrics.Histogram(
        "t_hist_seconds", "test", ["route"], buckets=(0.1, 1.0), registry=registry
    )
    series = histogram.labels("/x")
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        series.observe(value)
    got = _samples(generate_latest(registry).decode())
    route = ("route", "/x")
    assert got["t_hist_seconds_bucket", tuple(sorted((("le", "0.1"), route)))] == 2
    assert got["t_hist_seconds_bucket", tuple(sorted((("le", "1.0"), route)))] == 4
    assert got["t_hist_seconds_bucket", tuple(sorted((("le", "+Inf"), route)))] == 5
    assert got["t_hist_seconds_count", (route,)] == 5
    assert got["t_hist_seconds_sum", (route,)] == 8.65


def test_workers_files_merge_by_sum_and_a_gone_worker_leaves_only_its_events(
    tmp_path: Path,
) -> None:
    """Two workers' counters and gauges are summed; a file whose process no longer exists
    contributes its counters, not its gauges (they described that process)."""
    counter = metrics.Counter("t_merge", "test", ["k"], registry=None)
    counter.labels("a").inc(3)
    gauge = GaugeMetricFamily("t_pool", "test")
    gauge.add_metric([], 2)
    mine = metrics.snapshot([*counter.collect(), gauge])
    gone_pid = 2**22 + 7  # above the kernel's pid_max: no such process
    metrics.Shared(tmp_path, pid=gone_pid).publish(mine)
    other_live = metrics.Shared(tmp_path, pid=1)  # init: always there
    other_live.publish(mine)
    merged = metrics.merge([mine, *metrics.Shared(tmp_path, pid=12345).others()])
    by_name = {m.name: {s.name: s.value for s in m.samples} for m in merged}
    assert by_name["t_merge"]["t_merge_total"] == 9  # 3 of each of three
    assert by_name["t_pool"]["t_pool"] == 4  # mine and the live one's; not the gone one's
    metrics.clear(tmp_path)
    assert list(tmp_path.iterdir()) == []
