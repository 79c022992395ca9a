"""The risk-place job: expose everyone who scanned at a place in a window, in resumable chunks.

:func:`run_marking` runs one marking to the end on a connection of its own, holding the
marking's advisory lock, so only one process works on a marking at a time. A chunk commits its
exposures, statuses and resume point together (see :mod:`passcode.store.riskplaces`); its
statuses then go to Redis in one pipelined pass. A Redis failure leaves them for the sync worker
and does not stop the job. Cancelled (shutdown), the marking stays ``running`` and the next
start resumes it; an unexpected error marks it ``failed`` with the error's text.

:class:`RiskPlaceRunner` runs markings in the service's background, one at a time, and retries
one whose store was unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from passcode.domain.rules import Policy
from passcode.errors import StoreUnavailable
from passcode.store import riskplaces
from passcode.store.cache import Cache
from passcode.store.pg import Connection, Pool, acquire, pg_errors
from passcode.store.statuses import push_statuses_to_cache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running marking stands (after each chunk)."""

    marking_id: uuid.UUID
    place: str
    affected: int
    processed: int


@dataclass(slots=True)
class JobReport:
    """What one run of a marking did; ``state`` is the marking's state at the end, or
    ``skipped`` (another process holds it, or it was not in a state to run)."""

    marking_id: uuid.UUID
    state: str = "skipped"
    affected: int = 0
    processed: int = 0
    exposures: int = 0  # exposures inserted
    rows_written: int = 0  # status rows changed in Postgres
    versions_bumped: int = 0
    redis_writes: int = 0
    seconds: float = 0.0


OnProgress = Callable[[Progress], Awaitable[None]]


async def run_marking(
    pool: Pool,
    cache: Cache,
    marking_id: uuid.UUID,
    *,
    policy: Policy,
    chunk: int,
    timeout: float,
    states: Sequence[str] = (riskplaces.PENDING, riskplaces.RUNNING),
    on_progress: OnProgress | None = None,
) -> JobReport:
    """Run (or resume) the marking if it is in ``states`` and no one else runs it.

    Raises :class:`StoreUnavailable` when a store fails on the way (the marking stays
    ``running``; running it again resumes it).
    """
    report = JobReport(marking_id)
    started = time.perf_counter()
    async with acquire(pool, "risk place job", timeout) as conn:
        if not await riskplaces.try_lock(conn, marking_id, timeout=timeout):
            return report
        try:
            with pg_errors("risk place job"):
                await _work(conn, pool, cache, report, policy, chunk, timeout, states, on_progress)
        except StoreUnavailable:
            raise
        except Exception as exc:
            # A bug or a data error: retrying would fail the same way. Recorded for the
            # authority (GET shows it) and the operator (the log has the traceback).
            log.exception("risk place %s failed", marking_id)
            await riskplaces.finish(
                conn, marking_id, error=f"{type(exc).__name__}: {exc}"[:500], timeout=timeout
            )
            report.state = riskplaces.FAILED
        # Cancelled or failed on a store, the connection goes back with the lock held: the
        # pool's reset (pg_advisory_unlock_all) or closing the connection releases it.
        await riskplaces.unlock(conn, marking_id, timeout=timeout)
    report.seconds = time.perf_counter() - started
    return report


async def _work(
    conn: Connection,
    pool: Pool,
    cache: Cache,
    report: JobReport,
    policy: Policy,
    chunk: int,
    timeout: float,
    states: Sequence[str],
    on_progress: OnProgress | None,
) -> None:
    """The job, under the marking's lock; counts go into ``report``."""
    marking_id = report.marking_id
    marking = await riskplaces.claim(conn, marking_id, states=states, timeout=timeout)
    if marking is None:
        return
    subjects = await riskplaces.affected_subjects(conn, marking, timeout=timeout)
    cursor = marking.cursor_subject
    remaining = subjects if cursor is None else [s for s in subjects if s > cursor]
    report.state = riskplaces.RUNNING
    report.affected = len(subjects)
    report.processed = len(subjects) - len(remaining)
    await riskplaces.set_progress(
        conn, marking_id, affected=report.affected, processed=report.processed, timeout=timeout
    )
    log.info("risk place %s: %d subjects, %d left", marking_id, report.affected, len(remaining))
    # A chunk's Redis pass runs while the next chunk's transaction does: the two wait on
    # different servers (and use another pooled connection for the cached-version mark).
    pushing: asyncio.Task[int] | None = None
    try:
        for start in range(0, len(remaining), chunk):
            part = remaining[start : start + chunk]
            done = await riskplaces.apply_chunk(
                conn,
                marking,
                part,
                processed=report.processed + len(part),
                now=datetime.now(UTC),
                policy=policy,
                timeout=timeout,
            )
            report.processed += len(part)
            report.exposures += done.exposures
            report.rows_written += len(done.statuses.written)
            report.versions_bumped += done.statuses.bumped
            if pushing is not None:  # shielded: a cancel here lets it finish (finally below)
                report.redis_writes += await asyncio.shield(pushing)
            pushing = asyncio.ensure_future(
                push_statuses_to_cache(pool, cache, done.statuses.written, timeout=timeout)
            )
            if on_progress is not None:
                await on_progress(
                    Progress(marking_id, marking.place, report.affected, report.processed)
                )
        if pushing is not None:
            report.redis_writes += await asyncio.shield(pushing)
    finally:
        if pushing is not None and not pushing.done():
            # Stopped (cancelled, or a chunk failed) with a Redis pass in flight: let it end;
            # it has its own deadlines, and what it misses the sync worker repairs.
            await asyncio.wait([pushing])
    await riskplaces.finish(conn, marking_id, timeout=timeout)
    report.state = riskplaces.DONE


RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class RiskPlaceRunner:
    """Runs markings as background tasks, one at a time; cancelled cleanly at shutdown (a
    cancelled marking stays ``running`` and is resumed at the next start)."""

    def __init__(
        self, pool: Pool, cache: Cache, *, policy: Policy, chunk: int, timeout: float
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.policy = policy
        self.chunk = chunk
        self.timeout = timeout
        self._one_at_a_time = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, marking_id: uuid.UUID) -> None:
        """Run the marking in the background."""
        self._spawn(self._run(marking_id))

    def resume_unfinished(self) -> None:
        """In the background: run every marking left pending or running (by a stopped process)."""
        self._spawn(self._resume())

    async def _resume(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                found = await riskplaces.unfinished(self.pool, timeout=self.timeout)
                break
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        if found:
            log.info("resuming %d unfinished risk place marking(s)", len(found))
        for marking_id in found:
            self.start(marking_id)

    async def _run(self, marking_id: uuid.UUID) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                async with self._one_at_a_time:
                    report = await run_marking(
                        self.pool,
                        self.cache,
                        marking_id,
                        policy=self.policy,
                        chunk=self.chunk,
                        timeout=self.timeout,
                    )
            except StoreUnavailable:
                log.warning(
                    "risk place %s: store unavailable, retrying in %.0f s", marking_id, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception:
                log.exception("risk place %s: job failed", marking_id)
                return
            log.info(
                "risk place %s: %s, %d of %d subjects, %d exposures, %d statuses changed in %.2f s",
                marking_id,
                report.state,
                report.processed,
                report.affected,
                report.exposures,
                report.rows_written,
                report.seconds,
            )
            return

    async def close(self, *, timeout: float) -> None:
        """Cancel what runs and wait for it to stop (each chunk rolls back or has committed)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
