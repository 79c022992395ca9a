"""Scan retention: day partitions of ``scans`` wholly older than the cutoff are dropped.

Dropping a partition frees its rows at once (no dead tuples, no vacuum), which is why scans are
partitioned by day. A partition is found through the catalog and judged by its own upper bound,
so partitions not made by :func:`~passcode.store.scans.ensure_partitions` are judged alike. A
partition without an upper bound (a ``DEFAULT`` one, or one up to ``MAXVALUE``) cannot be
dropped whole: its rows older than the cutoff are deleted instead.

``DROP TABLE`` on a partition takes a brief ACCESS EXCLUSIVE lock on ``scans`` itself; a
``lock_timeout`` bounds how long inserts and tracing queries can queue behind it, and a
partition whose lock was not had in time is left for the next run.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import perf_counter

import asyncpg

from passcode.domain.retention import TEST_EXPOSURE_PREFIX, Cutoffs
from passcode.store.cache import Cache
from passcode.store.erasure import AuditNote, erase_subjects
from passcode.store.pg import Connection, Pool, acquire
from passcode.store.statuses import lock_subjects

log = logging.getLogger(__name__)

RETENTION_LOCK = 7412002  # session advisory lock: one run at a time (7412001: migrations)

# Every partition of scans with its upper bound, read back through Postgres's own text form of
# the bound ("FOR VALUES FROM ('…') TO ('…')"), cast in the same session so no time zone or
# format is assumed; NULL for DEFAULT and MAXVALUE.
_PARTITIONS = (
    "SELECT c.oid::regclass::text AS name,"
    " (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz"
    " AS upper"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'scans'::regclass"
    " ORDER BY upper, name"
)


@dataclass(frozen=True, slots=True)
class Dropped:
    partition: str
    rows: int  # counted just before the drop


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: datetime
    dropped: tuple[Dropped, ...]
    deleted: int  # rows deleted from partitions without an upper bound
    skipped: tuple[str, ...]  # partitions left for the next run (their lock was busy)

    def summary(self) -> str:
        """One line for logs and the CLI: partition names and counts, nothing personal."""
        rows = sum(d.rows for d in self.dropped)
        names = ", ".join(d.partition for d in self.dropped) or "none"
        text = (
            f"scan retention (cutoff {self.cutoff.isoformat()}): dropped {len(self.dropped)}"
            f" partition(s) with {rows} scans ({names}); deleted {self.deleted} scans elsewhere"
        )
        if self.skipped:
            text += f"; busy, left for the next run: {', '.join(self.skipped)}"
        return text


def retention_cutoff(now: datetime, days: int) -> datetime:
    """Scans before this are past retention; a day partition goes once its end is not after it."""
    if days < 1:
        raise ValueError(f"the scan retention period must be at least 1 day, not {days}")
    return now - timedelta(days=days)


@contextlib.asynccontextmanager
async def _run_lock(
    conn: Connection, *, timeout: float, work_timeout: float
) -> AsyncIterator[None]:
    """The run lock: one retention run at a time across replicas and the CLI."""
    await conn.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK, timeout=work_timeout)
    try:
        yield
    finally:
        # A connection that cannot unlock is broken (its session, and the lock, end) or goes
        # back to the pool, whose reset releases every advisory lock.
        with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, TimeoutError):
            await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK, timeout=timeout)


async def expire_scans(
    pool: Pool,
    *,
    cutoff: datetime,
    timeout: float,
    work_timeout: float = 300.0,
    lock_timeout: float = 2.0,
) -> RetentionReport:
    """Drop the partitions of ``scans`` whose upper bound is at or before ``cutoff``, and delete
    older rows from those without one.

    Runs hold a session advisory lock, so concurrent runners (replicas, the CLI) take turns and
    the later one finds the work done. ``timeout`` bounds getting a connection; ``work_timeout``
    each statement (waiting for the run lock, counting, deleting); ``lock_timeout`` how long a
    drop may wait for its table lock.
    """
    async with (
        acquire(pool, "scan retention", timeout) as conn,
        _run_lock(conn, timeout=timeout, work_timeout=work_timeout),
    ):
        return await _expire_scans_on(
            conn, cutoff=cutoff, work_timeout=work_timeout, lock_timeout=lock_timeout
        )


async def _expire_scans_on(
    conn: Connection, *, cutoff: datetime, work_timeout: float, lock_timeout: float
) -> RetentionReport:
    """:func:`expire_scans` on a connection holding the run lock."""
    dropped: list[Dropped] = []
    skipped: list[str] = []
    deleted = 0
    partitions = await conn.fetch(_PARTITIONS, timeout=work_timeout)
    for row in partitions:
        name: str = row["name"]
        upper: datetime | None = row["upper"]
        if upper is None:
            status = await conn.execute(
                f"DELETE FROM {name} WHERE scanned_at < $1",  # noqa: S608  # name quoted by regclass
                cutoff,
                timeout=work_timeout,
            )
            count = int(status.rsplit(" ", 1)[1])
            if count:
                log.info("retention: deleted %d scans from %s", count, name)
            deleted += count
            continue
        if upper > cutoff:
            continue
        rows: int = await conn.fetchval(
            f"SELECT count(*) FROM {name}",  # noqa: S608  # name quoted by regclass
            timeout=work_timeout,
        )
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
                await conn.execute(f"DROP TABLE {name}", timeout=work_timeout)
        except asyncpg.LockNotAvailableError:
            log.warning("retention: %s is busy; left for the next run", name)
            skipped.append(name)
            continue
        log.info("retention: dropped %s (%d scans)", name, rows)
        dropped.append(Dropped(name, rows))
    return RetentionReport(cutoff, tuple(dropped), deleted, tuple(skipped))


# Each kind's purge: the rows past their purpose at the cut-offs of
# :func:`passcode.domain.retention.cutoffs`, in the words of its rules. Each statement takes
# at most ``batch`` rows (by ctid), so no one transaction holds many row locks for long; a kind
# is repeated until a batch comes back short.
_DECLARATIONS = (
    "DELETE FROM declarations WHERE ctid = ANY(ARRAY("
    "SELECT d.ctid FROM declarations d WHERE d.declared_at <= $1 AND (d.declared_at <= $2"
    " OR EXISTS (SELECT 1 FROM declarations n WHERE n.subject_id = d.subject_id"
    " AND n.declared_at <= $1 AND (n.declared_at, n.id) > (d.declared_at, d.id)))"
    " LIMIT $3))"
)
_IDEMPOTENCY = (
    "UPDATE declarations SET idempotency_key = NULL, request_hash = NULL WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM declarations WHERE request_hash IS NOT NULL AND declared_at <= $1"
    " LIMIT $2))"
)
_OVERRIDES_ENDED = (
    "DELETE FROM overrides WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM overrides WHERE valid_until <= $1 LIMIT $2))"
)
# Settled for good: an open-ended override made after it, in force since the cut-off.
_OVERRIDES_SETTLED = (
    "DELETE FROM overrides WHERE ctid = ANY(ARRAY("
    "SELECT o.ctid FROM overrides s JOIN overrides o ON o.subject_id = s.subject_id"
    " WHERE s.valid_until IS NULL AND s.valid_from <= $1 AND o.created_at < s.created_at"
    " AND o.valid_from <= $1 LIMIT $2))"
)
# A positive test's exposure ($3: its source's prefix) only once an upload of its test would be
# refused ($2), whatever else holds.
_EXPOSURES_ENDED = (
    "DELETE FROM exposures WHERE ctid = ANY(ARRAY("
    "SELECT e.ctid FROM exposures e WHERE e.valid_until <= $1"
    " AND (NOT starts_with(e.source, $3) OR e.valid_from <= $2) LIMIT $4))"
)
_EXPOSURES_SETTLED = (
    "DELETE FROM exposures WHERE ctid = ANY(ARRAY("
    "SELECT e.ctid FROM overrides s JOIN exposures e ON e.subject_id = s.subject_id"
    " WHERE s.valid_until IS NULL AND s.valid_from <= $1 AND e.created_at <= s.created_at"
    " AND e.valid_from <= $1 AND (NOT starts_with(e.source, $3) OR e.valid_from <= $2)"
    " LIMIT $4))"
)
_TEST_RESULTS = (
    "DELETE FROM test_results WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM test_results WHERE tested_at <= $1 LIMIT $2))"
)
_CARDS = (
    "DELETE FROM cards WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM cards WHERE expires_at <= $1 LIMIT $2))"
)
_DEAD_LETTERS = (
    "DELETE FROM scan_dead_letters WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM scan_dead_letters WHERE first_seen <= $1 LIMIT $2))"
)
# Subjects with nothing left that could make a status or link them to a record; the scan log
# (a partitioned table: one probe per partition) is asked last, of these few. {only} narrows
# the search to some ids (the re-check under their locks).
_EMPTY_SUBJECTS = (
    "WITH candidates AS MATERIALIZED ("
    " SELECT s.id FROM subjects s WHERE s.created_at <= $1 {only}"
    " AND NOT EXISTS (SELECT 1 FROM declarations x WHERE x.subject_id = s.id)"
    " AND NOT EXISTS (SELECT 1 FROM overrides x WHERE x.subject_id = s.id)"
    " AND NOT EXISTS (SELECT 1 FROM exposures x WHERE x.subject_id = s.id)"
    " AND NOT EXISTS (SELECT 1 FROM test_results x WHERE x.subject_id = s.id)"
    " AND NOT EXISTS (SELECT 1 FROM cards x WHERE x.subject_id = s.id)"
    " ORDER BY s.id LIMIT $2)"
    " SELECT c.id FROM candidates c"
    " WHERE NOT EXISTS (SELECT 1 FROM scans x WHERE x.subject_id = c.id) ORDER BY c.id"
)
_FIND_EMPTY = _EMPTY_SUBJECTS.format(only="")
_STILL_EMPTY = _EMPTY_SUBJECTS.format(only="AND s.id = ANY($3::bytea[])")

KINDS = (
    "declarations",
    "idempotency_keys",
    "overrides",
    "exposures",
    "test_results",
    "cards",
    "scan_dead_letters",
    "audit_log",
    "subjects",
)
"""The kinds a purge reports on, in the order it purges them (besides the scans)."""


async def erase_empty(
    conn: Connection,
    cache: Cache,
    candidates: Sequence[bytes],
    *,
    cut: Cutoffs,
    timeout: float,
) -> int:
    """Erase those of ``candidates`` that still have nothing left once their rows are locked,
    through :func:`passcode.store.erasure.erase_subjects` (rows and Redis keys, one audit entry
    with a random erasure id); how many went.

    The locks (in id order, as every bulk writer takes them) and the re-check make a record
    committed since the candidates were found keep its subject, and make a declaration still
    to come wait, then make a subject of its own.
    """
    async with conn.transaction():
        await lock_subjects(conn, sorted(candidates), timeout=timeout)
        still = await conn.fetch(
            _STILL_EMPTY, cut.subject, len(candidates), list(candidates), timeout=timeout
        )
        ids = [bytes(row["id"]) for row in still]
        if not ids:
            return 0
        note = AuditNote(
            actor="retention",
            action="subject.erase",
            erasure_id=uuid.uuid4(),
            channel="retention",
        )
        report = await erase_subjects(
            conn, cache, ids, now=cut.now, timeout=timeout, keep_open_rulings=True, note=note
        )
    return report.erased


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one retention run removed: the scan partitions, and a count for each kind."""

    now: datetime
    scans: RetentionReport
    removed: dict[str, int]
    seconds: float

    @property
    def dropped(self) -> tuple[Dropped, ...]:
        """The scan partitions dropped."""
        return self.scans.dropped

    def lines(self) -> list[str]:
        """For the CLI: one line per kind with its count, then one per dropped partition."""
        shown = [f"{kind}: {self.removed.get(kind, 0)} removed" for kind in KINDS]
        shown.append(f"scans: {sum(d.rows for d in self.dropped) + self.scans.deleted} removed")
        shown.extend(f"dropped {d.partition}: {d.rows} scans" for d in self.dropped)
        return shown

    def summary(self) -> str:
        """One line for logs and the CLI: counts only, nothing personal."""
        counts = ", ".join(f"{kind} {self.removed.get(kind, 0)}" for kind in KINDS)
        return f"retention at {self.now.isoformat()} in {self.seconds:.2f} s: {counts}; {self.scans.summary()}"


async def _repeat(
    conn: Connection, sql: str, args: tuple[object, ...], batch: int, timeout: float
) -> int:
    """Run one batched purge statement until a batch comes back short; rows it changed."""
    total = 0
    while True:
        status = await conn.execute(sql, *args, batch, timeout=timeout)
        count = int(status.rsplit(" ", 1)[1])
        total += count
        if count < batch:
            return total


async def purge(
    pool: Pool,
    cut: Cutoffs,
    *,
    scan_cutoff: datetime,
    cache: Cache | None,
    timeout: float,
    work_timeout: float = 300.0,
    lock_timeout: float = 2.0,
    batch: int = 5000,
) -> PurgeReport:
    """One retention run under the run lock: the scans' partitions, then every other kind at
    the cut-offs ``cut``, then the subjects left with nothing (:func:`erase_empty`, with their
    Redis keys: ``cache``; None leaves them). Each statement commits on its own: a run cut short keeps what it did, and the next
    one does the rest."""
    started = perf_counter()
    removed: dict[str, int] = {}
    async with (
        acquire(pool, "retention", timeout) as conn,
        _run_lock(conn, timeout=timeout, work_timeout=work_timeout),
    ):
        scans = await _expire_scans_on(
            conn, cutoff=scan_cutoff, work_timeout=work_timeout, lock_timeout=lock_timeout
        )

        async def run(kind: str, sql: str, *args: object) -> None:
            removed[kind] = removed.get(kind, 0) + await _repeat(
                conn, sql, args, batch, work_timeout
            )

        await run("declarations", _DECLARATIONS, cut.superseded, cut.lapsed)
        await run("idempotency_keys", _IDEMPOTENCY, cut.idempotency)
        await run("overrides", _OVERRIDES_ENDED, cut.ruling)
        await run("overrides", _OVERRIDES_SETTLED, cut.ruling)
        test = (cut.ruling, cut.test_exposure, TEST_EXPOSURE_PREFIX)
        await run("exposures", _EXPOSURES_ENDED, *test)
        await run("exposures", _EXPOSURES_SETTLED, *test)
        await run("test_results", _TEST_RESULTS, cut.test_result)
        await run("cards", _CARDS, cut.card)
        await run("scan_dead_letters", _DEAD_LETTERS, cut.dead_letter)
        removed["audit_log"] = await conn.fetchval(
            "SELECT audit_log_purge($1)", cut.audit, timeout=work_timeout
        )
        removed["subjects"] = 0
        while cache is not None:
            empty = await conn.fetch(_FIND_EMPTY, cut.subject, batch, timeout=work_timeout)
            ids = [bytes(row["id"]) for row in empty]
            gone = await erase_empty(conn, cache, ids, cut=cut, timeout=work_timeout) if ids else 0
            removed["subjects"] += gone
            if len(ids) < batch or not gone:  # none went: they gained a record meanwhile
                break
    return PurgeReport(cut.now, scans, removed, perf_counter() - started)
