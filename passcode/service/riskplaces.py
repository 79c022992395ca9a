"""The risk-place job: expose everyone who scanned at a place in a window, in resumable chunks.

:func:`run_marking` runs one marking to the end on a connection of its own, holding the
marking's advisory lock, so only one process works on a marking at a time. Scans reach Postgres
through the Redis stream and the drain, so the job first waits until the stream holds no scan
from before the window's end (:func:`catch_up_scan_log`). A chunk commits its exposures,
statuses and progress together (see :mod:`passcode.store.riskplaces`); its statuses then go to
Redis in one pipelined pass. A Redis failure there leaves them for the sync worker and does not
stop the job. Cancelled (shutdown), the marking stays ``running`` and the next start resumes
it; an unavailable store or a transient error (deadlock, lock or serialization failure) leaves
it ``running`` for a retry; any other error marks it ``failed`` with the error's text.

:class:`RiskPlaceRunner` runs markings in the service's background, one at a time, under the
service's supervisor, and retries one whose store was unavailable or whose error was transient.

The drain and the supervisor are workers (``workers/drain.py``, ``workers/supervisor.py``), a
floor above this one: they come in from ``app.py`` as the :class:`DrainPasses` and
:class:`TaskStarter` they are, never imported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from passcode.domain.clock import SYSTEM_CLOCK, Clock, utc_now
from passcode.domain.rules import Policy
from passcode.errors import StoreUnavailable
from passcode.service import status
from passcode.store import riskplaces, scanstream
from passcode.store.cache import Cache
from passcode.store.pg import Connection, Pool, acquire, pg_errors
from passcode.store.statuses import lock_subjects

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


class DrainPasses(Protocol):
    """This process's scan-log drain, as the job's catch-up runs it (a ``ScanDrain``)."""

    async def ensure_groups(self) -> None: ...

    async def drain_once(self) -> int: ...


class TaskStarter(Protocol):
    """Runs work in the background, again after an unexpected error (a ``Supervisor``)."""

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]: ...


# A stream entry's id is Redis's clock, a scan's scanned_at the verifying process's: the wait
# covers entries this much past the window's end, for hosts whose clocks differ a little.
STREAM_CLOCK_MARGIN = 2.0
CATCH_UP_POLL = 0.1  # s between looks at the stream while another process drains it


async def catch_up_scan_log(
    cache: Cache, drain: DrainPasses | None, until: datetime, *, bound: float
) -> bool:
    """Wait until the scan streams hold no entry from before ``until``: every scan of the window
    is then in Postgres. With this process's ``drain``, drain passes run meanwhile; without one
    (``PASSCODE_DRAIN_ENABLED=0``: a ``passcode drain`` process stores them) it polls. An entry
    the drain cannot store goes to its dead letters, so one bad entry does not hold the wait;
    should a pass fail otherwise (a bug), it polls on (the supervised drain task retries).
    Returns False when ``bound`` seconds passed first (Redis unreachable or the drain behind)."""
    cutoff_ms = int((until.timestamp() + STREAM_CLOCK_MARGIN) * 1000)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    grouped = drain is None
    while True:
        moved = 0
        try:
            oldest = await scanstream.oldest_entry_ms(cache)
            if oldest is None or oldest >= cutoff_ms:
                return True
            if drain is not None and loop.time() < deadline:
                async with asyncio.timeout(deadline - loop.time()):
                    if not grouped:
                        await drain.ensure_groups()
                        grouped = True
                    moved = await drain.drain_once()
        except (StoreUnavailable, TimeoutError):
            pass  # tried again until the bound
        except Exception:  # not this job's to fix: the drain's own task logs and retries it
            log.exception("a drain pass for a risk place job failed; waiting for the drain")
            drain = None
        left = deadline - loop.time()
        if left <= 0:
            return False
        if not moved:
            await asyncio.sleep(min(CATCH_UP_POLL, left))


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
    drain: DrainPasses | None = None,
    catch_up: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> JobReport:
    """Run (or resume) the marking if it is in ``states`` and no one else runs it.

    Before listing who scanned, waits up to ``catch_up`` seconds (default ``timeout``) for the
    scan stream to hold nothing from before the window's end, running ``drain`` (this process's,
    if it drains) meanwhile; past that bound it logs a warning and goes on with Postgres's scans.
    Statuses are re-derived as of ``clock``'s now.

    Raises :class:`StoreUnavailable` when a store fails on the way or an error is transient
    (the marking stays ``running``; running it again resumes it).
    """
    report = JobReport(marking_id)
    started = time.perf_counter()
    async with acquire(pool, "risk place job", timeout) as conn:
        if not await riskplaces.try_lock(conn, marking_id, timeout=timeout):
            return report
        try:
            with pg_errors("risk place job"):
                await _work(
                    conn,
                    pool,
                    cache,
                    report,
                    policy,
                    chunk,
                    timeout,
                    states,
                    on_progress,
                    drain,
                    timeout if catch_up is None else catch_up,
                    clock,
                )
        except StoreUnavailable:
            raise
        except riskplaces.TRANSIENT_ERRORS as exc:
            # The chunk rolled back; the marking stays running and a retry goes on from there.
            log.warning("risk place %s: transient %s, to retry", marking_id, type(exc).__name__)
            raise StoreUnavailable(f"risk place job ({type(exc).__name__})") from exc
        except Exception as exc:
            # A bug or a data error: retrying would fail the same way. Recorded for the
            # authority (GET shows it) and the operator (the log has the traceback).
            log.exception("risk place %s failed", marking_id)
            await riskplaces.finish(
                conn, marking_id, error=f"{type(exc).__name__}: {exc}"[:500], timeout=timeout
            )
            report.state = riskplaces.FAILED
        # Cancelled, failed on a store or transiently, the connection goes back with the lock
        # held: the pool's reset (pg_advisory_unlock_all) or closing the connection releases it.
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
    drain: DrainPasses | None,
    catch_up: float,
    clock: Clock,
) -> None:
    """The job, under the marking's lock; counts go into ``report``."""
    marking_id = report.marking_id
    marking = await riskplaces.claim(conn, marking_id, states=states, timeout=timeout)
    if marking is None:
        return
    if not await catch_up_scan_log(cache, drain, marking.until, bound=catch_up):
        log.warning(
            "risk place %s: after %.0f s the scan stream still holds scans from before %s (or"
            " Redis is unreachable); going on with those in Postgres. Is a drain running"
            " (PASSCODE_DRAIN_ENABLED=0 needs a `passcode drain` process)?",
            marking_id,
            catch_up,
            marking.until.isoformat(),
        )
    affected = await riskplaces.affected_subjects(conn, marking, timeout=timeout)
    remaining = affected.todo
    report.state = riskplaces.RUNNING
    report.affected = affected.total
    report.processed = affected.total - len(remaining)
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
            # One transaction: the chunk's subjects locked (id order), their exposures, their
            # statuses re-derived and written, and the progress (the chunk's last subject).
            async with conn.transaction():
                holders = await lock_subjects(conn, part, timeout=timeout)
                exposures = await riskplaces.add_exposures(
                    conn, marking, list(holders), timeout=timeout
                )
                changes = await status.write_locked(
                    conn,
                    holders,
                    now=utc_now(clock),
                    policy=policy,
                    timeout=timeout,
                )
                await riskplaces.set_progress(
                    conn,
                    marking_id,
                    processed=report.processed + len(part),
                    cursor=part[-1],
                    timeout=timeout,
                )
            report.processed += len(part)
            report.exposures += exposures
            report.rows_written += len(changes.written)
            report.versions_bumped += changes.bumped
            if pushing is not None:  # shielded: a cancel here lets it finish (finally below)
                report.redis_writes += await asyncio.shield(pushing)
            pushing = asyncio.ensure_future(
                status.publish_pooled(pool, cache, changes.written, timeout=timeout)
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
        self,
        pool: Pool,
        cache: Cache,
        *,
        policy: Policy,
        chunk: int,
        timeout: float,
        supervisor: TaskStarter,
        drain: DrainPasses | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.drain = drain  # this process's, when it drains (else another process does)
        self.supervisor = supervisor
        self.clock = clock
        self.policy = policy
        self.chunk = chunk
        self.timeout = timeout
        self._one_at_a_time = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Under the supervisor: an unexpected error is logged and the work starts again."""
        task = self.supervisor.start(name, work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, marking_id: uuid.UUID) -> None:
        """Run the marking in the background."""
        self._spawn(f"risk-place {marking_id}", lambda: self._run(marking_id))

    def resume_unfinished(self) -> None:
        """In the background: run every marking left pending or running (by a stopped process)."""
        self._spawn("risk-place resume", self._resume)

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
                        drain=self.drain,
                        clock=self.clock,
                    )
            except StoreUnavailable:
                log.warning(
                    "risk place %s: store unavailable or transient error, retrying in %.0f s",
                    marking_id,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
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
