"""The scheduled retention job: expire old scans at start-up, then every interval.

Each replica runs it; the run lock in :func:`~passcode.store.retention.expire_scans` makes the
later of two concurrent runs find nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging

from passcode.domain.clock import Clock, utc_now
from passcode.store.pg import Pool
from passcode.store.retention import RetentionReport, expire_scans, retention_cutoff

log = logging.getLogger(__name__)


async def expire_now(pool: Pool, *, days: int, clock: Clock, timeout: float) -> RetentionReport:
    """One run with the cutoff ``days`` before the clock's now; logs what it did."""
    now = utc_now(clock)
    report = await expire_scans(pool, cutoff=retention_cutoff(now, days), timeout=timeout)
    if report.dropped or report.deleted or report.skipped:
        log.info("%s", report.summary())
    return report


async def expire_logged(pool: Pool, *, days: int, clock: Clock, timeout: float) -> bool:
    """:func:`expire_now`, a failure logged instead of raised (the next run tries again)."""
    try:
        await expire_now(pool, days=days, clock=clock, timeout=timeout)
    except Exception:  # a background job outlives any one failed run, whatever failed
        log.exception("scan retention run failed; the next run tries again")
        return False
    return True


async def run_retention(
    pool: Pool, *, days: int, interval: float, clock: Clock, timeout: float
) -> None:
    """Until cancelled: every ``interval`` seconds, a run. Nothing here ends the service."""
    while True:
        await asyncio.sleep(interval)
        await expire_logged(pool, days=days, clock=clock, timeout=timeout)
