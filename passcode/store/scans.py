"""The scan log in PostgreSQL: day partitions, COPY-speed idempotent inserts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from passcode.domain.model import Color, Decision, Reason
from passcode.domain.verdict import Verdict, judge_live
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


_SELECTED = ["coalesce(s.place, t.place, '')" if c == "place" else f"s.{c}" for c in COLUMNS]


@dataclass(frozen=True, slots=True)
class ScanRow:
    scanned_at: datetime
    scan_id: uuid.UUID
    terminal_time: datetime | None
    terminal_id: uuid.UUID
    place: str | None  # None: taken from the terminal when stored
    subject_id: bytes | None
    decision: str
    reason: str
    color: str | None


SEP = "|"
_SCAN_LOCK = 0x5C4D  # advisory lock namespace (first key) of scan-id buckets
_SCAN_LOCK_BUCKETS = 64


def encode_record(
    *,
    scan_id: str,
    at_ms: int,
    terminal_time: datetime | None,
    terminal_id: str,
    subject: bytes | None,
    pass_version: int,
    verdict: Verdict | None,
) -> str:
    """One scan as the stream carries it: ``|``-separated, no free text (the place is joined
    from ``terminals`` when stored). ``verdict`` is None when the verify script adds a snapshot
    of the live status instead, from which :func:`decode_entry` derives the decision.
    """
    decided = ("", "", "")
    if verdict is not None:
        color = verdict.color.value if verdict.color else ""
        decided = (verdict.decision.value, verdict.reason.value, color)
    return SEP.join(
        (
            scan_id,
            str(at_ms),
            terminal_time.isoformat() if terminal_time else "",
            terminal_id,
            subject.hex() if subject else "",
            str(pass_version),
            *decided,
        )
    )


def decode_entry(fields: Mapping[bytes, bytes]) -> ScanRow:
    """A stream entry as a table row (place left for the insert to join); ValueError if bad."""
    try:
        parts = fields[b"r"].decode().split(SEP)
        scan_id, at_ms, tt, terminal_id, subject, pv, decision, reason, color = parts
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unreadable scan entry: {exc}") from exc
    if b"sc" in fields:
        live = fields[b"sc"].decode()
        verdict = judge_live(int(pv), Color(live) if live else None, int(fields[b"sv"]))
        decision, reason = verdict.decision.value, verdict.reason.value
        color = verdict.color.value if verdict.color else ""
    return ScanRow(
        scanned_at=datetime.fromtimestamp(int(at_ms) / 1000, UTC),
        scan_id=uuid.UUID(scan_id),
        terminal_time=datetime.fromisoformat(tt) if tt else None,
        terminal_id=uuid.UUID(terminal_id),
        place=None,
        subject_id=bytes.fromhex(subject) if subject else None,
        decision=Decision(decision).value,
        reason=Reason(reason).value,
        color=color or None,
    )


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
                "CREATE TEMP TABLE scan_stage (LIKE scans INCLUDING DEFAULTS) ON COMMIT DROP;"
                " ALTER TABLE scan_stage ALTER COLUMN place DROP NOT NULL"
            )
            await conn.copy_records_to_table(
                "scan_stage",
                records=[tuple(getattr(r, c) for c in COLUMNS) for r in rows],
                columns=COLUMNS,
                timeout=timeout,
            )
            # The NOT EXISTS below cannot see a concurrent transaction's row: two attempts of
            # one scan id at once (a retry while the first is in flight, Redis down) would both
            # insert. Inserters of the same scan id serialize on its bucket's lock (in order:
            # no deadlock) until commit; a few dozen locks at most per transaction.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int, b) FROM unnest($2::int[]) AS b",
                _SCAN_LOCK,
                sorted({r.scan_id.int % _SCAN_LOCK_BUCKETS for r in rows}),
            )
            status = await conn.execute(
                f"INSERT INTO scans ({', '.join(COLUMNS)})"  # noqa: S608  # constant column list
                f" SELECT DISTINCT ON (s.scan_id) {', '.join(_SELECTED)}"
                " FROM scan_stage s LEFT JOIN terminals t ON t.id = s.terminal_id"
                " WHERE NOT EXISTS (SELECT 1 FROM scans x"
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
