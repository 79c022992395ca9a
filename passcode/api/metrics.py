"""``GET /metrics``: every metric of :mod:`passcode.metrics` in Prometheus's text format.

The events are counted where they happen; the states are read here, when scraped: this
process's PostgreSQL pool, requests in flight and shed, its signing keys, and the scan stream's
backlog per shard (from Redis, within a deadline: a scrape while Redis is down answers without
those series rather than waiting). Under several workers the events and per-process states
are every worker's, summed (:class:`passcode.metrics.Shared`); the keys and the backlog are one
fact, read by the worker the scrape reached.

Unauthenticated, like ``/readyz``: it holds counts and timings, nothing about a person or a
credential, and operators scrape it on the internal network (see ``deploy/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from passcode import metrics
from passcode.errors import StoreUnavailable
from passcode.keys import CACHE, KEYRING, POOL, SETTINGS, SHEDDER, SUPERVISOR
from passcode.service.health import stream_backlogs

log = logging.getLogger(__name__)

# The text format every Prometheus reads (prometheus-client's newer default names 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BACKLOG_DEADLINE = 0.5  # s: a scrape does not wait longer on Redis for the backlog


def process_families(app: web.Application) -> list[Metric]:
    """What this process holds: the counted events and its own states (summed over workers)."""
    shedder = app[SHEDDER]
    shed = CounterMetricFamily(
        "passcode_shed_requests",
        "Requests refused by load shedding (503), by class",
        labels=["class"],
    )
    shed.add_metric(["issue"], shedder.shed[0])
    shed.add_metric(["verify"], shedder.shed[1])
    in_flight = GaugeMetricFamily(
        "passcode_requests_in_flight", "Requests of a shedding class being answered now"
    )
    in_flight.add_metric([], shedder.in_flight)
    families: list[Metric] = [*metrics.REGISTRY.collect(), shed, in_flight]
    pool = app.get(POOL)
    if pool is not None:
        connections = GaugeMetricFamily(
            "passcode_pg_pool_connections",
            "PostgreSQL pool connections open, by state",
            labels=["state"],
        )
        idle = pool.get_idle_size()
        connections.add_metric(["in_use"], pool.get_size() - idle)
        connections.add_metric(["idle"], idle)
        size = GaugeMetricFamily(
            "passcode_pg_pool_max_connections", "The PostgreSQL pool's upper bound"
        )
        size.add_metric([], pool.get_max_size())
        families += [connections, size]
    return families


async def _fact_families(app: web.Application) -> list[Metric]:
    """One fact for the whole service, read by the worker scraped: keys, the stream backlog."""
    now = int(app[SETTINGS].clock.now())
    families: list[Metric] = []
    holder = app.get(KEYRING)
    if holder is not None:
        age = GaugeMetricFamily(
            "passcode_signing_key_age_seconds", "Since the signing key in use became active"
        )
        with contextlib.suppress(LookupError, RuntimeError):  # no active key: no sample
            age.add_metric([], now - holder.signer(now).activates_at)
        published = GaugeMetricFamily(
            "passcode_signing_keys_published", "Keys GET /v1/keys publishes now"
        )
        published.add_metric(
            [], len(holder.keyring.published(now, retire_after=holder.retire_after))
        )
        families += [age, published]
    cache = app.get(CACHE)
    if cache is not None:
        try:
            shards = await stream_backlogs(cache, timeout=BACKLOG_DEADLINE)
        except (StoreUnavailable, TimeoutError):
            log.info("metrics: the scan-stream backlog could not be read; left out")
            return families
        backlog = GaugeMetricFamily(
            "passcode_scan_stream_backlog",
            "Scan-stream entries not yet stored in PostgreSQL, by shard",
            labels=["shard"],
        )
        oldest = GaugeMetricFamily(
            "passcode_scan_stream_oldest_age_seconds",
            "Age of the oldest scan not yet stored (the drain's lag), 0 when none waits",
        )
        ages = []
        for shard, length, first_ms in shards:
            backlog.add_metric([str(shard)], length)
            if first_ms is not None:
                ages.append(max(0.0, now - first_ms / 1000.0))
        oldest.add_metric([], max(ages, default=0.0))
        families += [backlog, oldest]
    return families


class _Families:
    """A collector answering a fixed list of families (one scrape's)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


async def get_metrics(request: web.Request) -> web.Response:
    """Every worker's events and states, this worker's reading of the shared facts."""
    app = request.app
    directory = app[SETTINGS].metrics_dir
    own = process_families(app)
    if directory is not None:
        shared = metrics.Shared(directory)
        own = metrics.merge([metrics.snapshot(own), *shared.others()])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*own, *await _fact_families(app)]))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})


async def share(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context of a worker of several: write its values for the others now and
    then, and its events once more at exit (a restarted worker's count is not lost)."""
    directory = app[SETTINGS].metrics_dir
    if directory is None:
        yield
        return
    shared = metrics.Shared(directory)

    async def publish() -> None:
        while True:
            try:
                shared.publish(metrics.snapshot(process_families(app)))
            except OSError:
                log.exception("metrics: could not write %s", directory)
            await asyncio.sleep(metrics.SHARE_INTERVAL)

    task = app[SUPERVISOR].start("metrics-share", publish)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(OSError):
        shared.publish(metrics.snapshot(process_families(app), events_only=True))
