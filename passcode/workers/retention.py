"""The scheduled retention job: a purge of every kind at start-up, then every interval.

Each replica runs it; the run lock in :func:`~passcode.store.retention.purge` makes the later
of two concurrent runs find nothing left to do. What goes when is
:mod:`passcode.domain.retention`'s; the statements are :mod:`passcode.store.retention`'s.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from passcode.domain.clock import Clock, utc_now
from passcode.domain.retention import RetentionPeriods, cutoffs
from passcode.domain.rules import Policy
from passcode.store.cache import Cache
from passcode.store.pg import Pool
from passcode.store.retention import PurgeReport, purge, retention_cutoff

log = logging.getLogger(__name__)

_DEFAULT_PERIODS = RetentionPeriods()
_DEFAULT_TTL = Policy().declaration_ttl


async def expire_now(
    pool: Pool,
    *,
    days: int,
    clock: Clock,
    timeout: float,
    periods: RetentionPeriods = _DEFAULT_PERIODS,
    declaration_ttl: timedelta = _DEFAULT_TTL,
    cache: Cache | None = None,
) -> PurgeReport:
    """One run at the clock's now: scans older than ``days``, every other kind by ``periods``
    (a declaration lapses ``declaration_ttl`` after it was made), subjects left with nothing
    with their Redis keys (``cache``; None: they are left for a run that has one). Logs what went, per kind."""
    now = utc_now(clock)
    report = await purge(
        pool,
        cutoffs(now, periods, declaration_ttl=declaration_ttl),
        scan_cutoff=retention_cutoff(now, days),
        cache=cache,
        timeout=timeout,
    )
    if any(report.removed.values()) or report.dropped or report.scans.deleted:
        log.info("%s", report.summary())
    if report.scans.skipped:
        log.info("%s", report.scans.summary())
    return report


async def expire_logged(
    pool: Pool,
    *,
    days: int,
    clock: Clock,
    timeout: float,
    periods: RetentionPeriods = _DEFAULT_PERIODS,
    declaration_ttl: timedelta = _DEFAULT_TTL,
    cache: Cache | None = None,
) -> bool:
    """:func:`expire_now`, a failure logged instead of raised (the next run tries again)."""
    try:
        await expire_now(
            pool,
            days=days,
            clock=clock,
            timeout=timeout,
            periods=periods,
            declaration_ttl=declaration_ttl,
            cache=cache,
        )
    except Exception:  # a background job outlives any one failed run, whatever failed
        log.exception("retention run failed; the next run tries again")
        return False
    return True


async def run_retention(
    pool: Pool,
    *,
    days: int,
    interval: float,
    clock: Clock,
    timeout: float,
    periods: RetentionPeriods = _DEFAULT_PERIODS,
    declaration_ttl: timedelta = _DEFAULT_TTL,
    cache: Cache | None = None,
) -> None:
    """Until cancelled: every ``interval`` seconds, a run. Nothing here ends the service."""
    while True:
        await asyncio.sleep(interval)
        await expire_logged(
            pool,
            days=days,
            clock=clock,
            timeout=timeout,
            periods=periods,
            declaration_ttl=declaration_ttl,
            cache=cache,
        )
