"""Every metric the service exports, defined once, and the sharing of them between workers.

On the lowest floor (it imports nothing of ours), so each floor counts its own events here:
the transport its Redis batches, ``store.pg`` its pool waits, the drain its rows, the limiter
its refusals, the api's problems wrapper each request. What is a state rather than an event
(pool size, shed counts, signing keys, the scan-stream backlog) is read when ``/metrics`` is
scraped (:mod:`passcode.api.metrics`).

The counting is this module's own, plain attributes bumped on the event loop's thread (no
lock: only that thread counts), because it is on the verify path: prometheus-client's metric
objects take a lock for each increment and scan the buckets for each observation, 2 µs a verify
together against this module's 0.5 µs; its multiprocess mode's mmap'd values cost three times
more again. prometheus-client writes the exposition (each family here is a collector of its
registry). Under ``passcode serve --workers N`` each worker writes what it holds to a file of
its own in a directory the CLI creates for the run (:class:`Shared`, about once a second and
at exit); the worker a scrape reaches answers its own live values plus the others' files,
summed (:func:`merge`). So the totals are every worker's, the other workers' at most
:data:`SHARE_INTERVAL` old.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=False)


class Tally:
    """One counter series: ``inc`` adds to ``value``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Buckets:
    """One histogram series: a count per bucket (not cumulative until exported) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class _Family:
    """A metric's series by label values; a collector of :data:`REGISTRY`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labels)
        if registry is not None:
            registry.register(self)  # type: ignore[arg-type]  # a collector by its methods

    def describe(self) -> list[Metric]:
        return []  # nothing to check against other collectors' names: all are here


class Counter(_Family):
    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labels, registry)
        self._series: dict[tuple[str, ...], Tally] = {}

    def labels(self, *values: str) -> Tally:
        """The series of these label values (bind it once, increment it on the hot path)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Tally()
        return series

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in self._series.items():
            family.add_metric(list(values), series.value)
        yield family


class Histogram(_Family):
    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: tuple[float, ...],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labels, registry)
        self.bounds = buckets
        self._series: dict[tuple[str, ...], Buckets] = {}
        if not labels:
            self.observe = self.labels().observe

    def labels(self, *values: str) -> Buckets:
        """The series of these label values (bind it once, observe it on the hot path)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Buckets(self.bounds)
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in self._series.items():
            cumulative, running = [], 0
            for bound, count in zip((*self.bounds, float("inf")), series.counts, strict=True):
                running += count
                cumulative.append((_le(bound), float(running)))
            family.add_metric(list(values), cumulative, series.total)
        yield family


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


REQUESTS = Counter(
    "passcode_http_requests",
    "Requests answered, by method, route template ((unrouted): no route) and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "passcode_http_request_duration_seconds",
    "Time from routing to the answer, of the routes with a shedding class (verify, batch"
    " verify, pass, declaration)",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
VERIFY_DECISIONS = Counter(
    "passcode_verify_decisions",
    "Verify answers (single and batch items), by decision and reason code",
    ["decision", "reason"],
)
RATE_LIMITED = Counter(
    "passcode_rate_limited", "Requests refused by a rate limit (429), by limit", ["limit"]
)
REDIS_BATCH = Histogram(
    "passcode_redis_batch_commands",
    "Commands per Redis round trip of the coalescing batcher (its _count: the round trips)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
PG_ACQUIRE_SECONDS = Histogram(
    "passcode_pg_acquire_wait_seconds",
    "Time waited for a PostgreSQL pool connection",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
)
DRAIN_ROWS = Counter(
    "passcode_drain_rows",
    "Scan-stream entries the drain moved: stored in PostgreSQL, or kept as dead letters",
    ["outcome"],
)
DRAIN_STORED = DRAIN_ROWS.labels("stored")
DRAIN_DEAD = DRAIN_ROWS.labels("dead_letter")

# decision → reason → its series, bound on first use (the verify path pays two dict lookups).
_DECIDED: dict[str, dict[str, Tally]] = {}


def count_decision(decision: str, reason: str) -> None:
    """One verify answer of this decision and reason."""
    reasons = _DECIDED.get(decision)
    if reasons is None:
        reasons = _DECIDED[decision] = {}
    series = reasons.get(reason)
    if series is None:
        series = reasons[reason] = VERIFY_DECISIONS.labels(decision, reason)
    series.inc()


SHARE_INTERVAL = 1.0  # s between a worker's writes of its values to the shared directory

Sample = tuple[str, dict[str, str], float]
Family = tuple[str, str, str, list[Sample]]  # name, type, help, samples


def snapshot(families: Iterable[Metric], *, events_only: bool = False) -> list[Family]:
    """Families as plain data; ``events_only`` keeps counters and histograms (what a worker
    that has exited leaves behind: its gauges described a process that is gone)."""
    return [
        (m.name, m.type, m.documentation, [(s.name, dict(s.labels), s.value) for s in m.samples])
        for m in families
        if not events_only or m.type in {"counter", "histogram"}
    ]


def merge(snapshots: Sequence[Sequence[Family]]) -> list[Metric]:
    """The families of several workers, each sample summed over them (counters, histograms,
    and the per-process gauges: pool connections, requests in flight)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in snapshots:
        for name, kind, documentation, samples in families:
            if name not in merged:
                merged[name] = Metric(name, documentation, kind)
                values[name] = {}
            into = values[name]
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels.items())))
                into[key] = into.get(key, 0.0) + value
    for name, metric in merged.items():
        for (sample_name, pairs), value in values[name].items():
            metric.add_sample(sample_name, dict(pairs), value)
    return list(merged.values())


class Shared:
    """The run's directory of worker files (``<pid>.json``), one process's view of it."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid

    def publish(self, families: list[Family]) -> None:
        """Replace this worker's file (atomically: a reader sees the old file or the new)."""
        path = self.directory / f"{self.pid}.json"
        scratch = path.with_suffix(".tmp")
        scratch.write_bytes(orjson.dumps(families))
        scratch.replace(path)

    def others(self) -> list[list[Family]]:
        """The other workers' files; only the events of those whose process has gone."""
        found: list[list[Family]] = []
        for path in self.directory.glob("*.json"):
            pid = int(path.stem) if path.stem.isdigit() else None
            if pid is None or pid == self.pid:
                continue
            try:
                families = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # removed meanwhile, or not ours
            if not _alive(pid):
                families = [f for f in families if f[1] in {"counter", "histogram"}]
            found.append(families)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear(directory: Path) -> None:
    """Remove what an earlier run left (its totals are not this run's)."""
    for path in (*directory.glob("*.json"), *directory.glob("*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
