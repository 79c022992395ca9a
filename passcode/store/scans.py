"""The scan log in PostgreSQL: day partitions, COPY-speed idempotent inserts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from passcode.store.pg import Connection, Pool, acquire

COLUMNS = (
    "scanned_at",
    "scan_id",
    "terminal_time",
    "terminal_id",
    "place",
    "subject_id",
    "decision",
    "reason",
    "color",
)


@dataclass(frozen=True, slots=True)
class ScanRow:
    scanned_at: datetime
    scan_id: uuid.UUID
    terminal_time: datetime | None
    terminal_id: uuid.UUID
    place: str
    subject_id: bytes | None
    decision: str
    reason: str
    color: str | None


def partition_name(day: date) -> str:
    return f"scans_{day:%Y%m%d}"


async def ensure_partitions(conn: Connection, days: Iterable[date]) -> None:
    """Create missing day partitions; a concurrent creator winning the race is fine."""
    for day in sorted(set(days)):
        start = datetime.combine(day, time(), tzinfo=UTC)
        end = start + timedelta(days=1)
        try:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF scans"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
            continue


async def insert_scans(
    pool: Pool, rows: Sequence[ScanRow], *, timeout: float, dedupe_window: int
) -> int:
    """COPY into a staging table, then insert what is new: a scan id is stored once.

    A re-delivered stream entry conflicts on the key; a retry that reached Postgres another way
    (and so has another server time) is caught by the scan_id check within ``dedupe_window``
    seconds. Returns the number of rows newly stored. Commits before returning, so the caller
    may then acknowledge the source.
    """
    if not rows:
        return 0
    async with acquire(pool, "store scans", timeout) as conn:
        await ensure_partitions(conn, (r.scanned_at.astimezone(UTC).date() for r in rows))
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE scan_stage (LIKE scans INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            await conn.copy_records_to_table(
                "scan_stage",
                records=[tuple(getattr(r, c) for c in COLUMNS) for r in rows],
                columns=COLUMNS,
                timeout=timeout,
            )
            status = await conn.execute(
                f"INSERT INTO scans ({', '.join(COLUMNS)})"  # noqa: S608  # constant column list
                f" SELECT DISTINCT ON (s.scan_id) {', '.join('s.' + c for c in COLUMNS)}"
                " FROM scan_stage s WHERE NOT EXISTS (SELECT 1 FROM scans x"
                "  WHERE x.scan_id = s.scan_id"
                "  AND x.scanned_at >= s.scanned_at - make_interval(secs => $1)"
                "  AND x.scanned_at <= s.scanned_at + make_interval(secs => $1))"
                " ORDER BY s.scan_id, s.scanned_at"
                " ON CONFLICT (scanned_at, scan_id) DO NOTHING",
                float(dedupe_window),
            )
    return int(status.rsplit(" ", 1)[1])


async def count_scans(pool: Pool, *, timeout: float) -> int:
    async with acquire(pool, "count scans", timeout) as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM scans")
        return found
