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
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from passcode.store.pg import Pool, acquire

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
    dropped: list[Dropped] = []
    skipped: list[str] = []
    deleted = 0
    async with acquire(pool, "scan retention", timeout) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK, timeout=work_timeout)
        try:
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
        finally:
            # A connection that cannot unlock is broken (its session, and the lock, end) or goes
            # back to the pool, whose reset releases every advisory lock.
            with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, TimeoutError):
                await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK, timeout=timeout)
    return RetentionReport(cutoff, tuple(dropped), deleted, tuple(skipped))
