"""Contact tracing reads of the scan log: who scanned at a place, where a subject scanned.

Both walk one index of the day-partitioned ``scans`` table (migration 004: ``(place,
scanned_at)``, ``(subject_id, scanned_at)``) in time order, only over the partitions the window
touches, and page by keyset ``(scanned_at, scan_id)``: a page costs the same however deep it is.
``loadtest/trace_bench.py`` measures them on 10M scans.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from passcode.store.pg import Pool, acquire

NIL = uuid.UUID(int=0)  # before every scan id: the first page starts at ``since`` itself


@dataclass(frozen=True, slots=True)
class Position:
    """A keyset position: the page after it starts past this scan."""

    scanned_at: datetime
    scan_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PlaceScan:
    """A scan at a place, with who it was (None for a code that named no subject)."""

    scanned_at: datetime
    scan_id: uuid.UUID
    terminal_id: uuid.UUID
    decision: str
    color: str | None
    subject_id: bytes | None
    user_id_enc: bytes | None  # sealed; opened only by the audited tracing query
    name_masked: str | None


@dataclass(frozen=True, slots=True)
class SubjectScan:
    place: str
    scanned_at: datetime
    scan_id: uuid.UUID
    terminal_id: uuid.UUID
    decision: str
    color: str | None


def _start(since: datetime, after: Position | None) -> tuple[datetime, uuid.UUID]:
    """Where a page starts: ``since``, or past ``after`` when that lies in the window."""
    if after is None or after.scanned_at < since:
        return since, NIL
    return after.scanned_at, after.scan_id


# The range condition on scanned_at alone lets the index scan start at the position and prunes
# partitions; the row comparison then skips scans at that very instant up to the position's id.
# The inner LIMIT keeps the join to subjects to the page's own rows.
PLACE_QUERY = (
    "SELECT p.scanned_at, p.scan_id, p.terminal_id, p.decision, p.color, p.subject_id,"
    " sub.user_id_enc, sub.name_masked"
    " FROM (SELECT scanned_at, scan_id, terminal_id, decision, color, subject_id FROM scans"
    "  WHERE place = $1 AND scanned_at >= $2 AND scanned_at < $3"
    "  AND (scanned_at, scan_id) > ($2, $4)"
    "  ORDER BY scanned_at, scan_id LIMIT $5) p"
    " LEFT JOIN subjects sub ON sub.id = p.subject_id"
    " ORDER BY p.scanned_at, p.scan_id"
)

SUBJECT_QUERY = (
    "SELECT place, scanned_at, scan_id, terminal_id, decision, color FROM scans"
    " WHERE subject_id = $1 AND scanned_at >= $2 AND scanned_at < $3"
    " AND (scanned_at, scan_id) > ($2, $4)"
    " ORDER BY scanned_at, scan_id LIMIT $5"
)


async def scans_at_place(
    pool: Pool,
    *,
    place: str,
    since: datetime,
    until: datetime,
    after: Position | None,
    limit: int,
    timeout: float,
) -> list[PlaceScan]:
    """Scans at ``place`` in ``[since, until)`` after ``after``, oldest first, at most ``limit``."""
    start, after_id = _start(since, after)
    async with acquire(pool, "trace place", timeout) as conn:
        rows = await conn.fetch(PLACE_QUERY, place, start, until, after_id, limit, timeout=timeout)
    return [
        PlaceScan(
            r["scanned_at"],
            r["scan_id"],
            r["terminal_id"],
            r["decision"],
            r["color"],
            r["subject_id"],
            r["user_id_enc"],
            r["name_masked"],
        )
        for r in rows
    ]


async def scans_of_subject(
    pool: Pool,
    *,
    subject_id: bytes,
    since: datetime,
    until: datetime,
    after: Position | None,
    limit: int,
    timeout: float,
) -> list[SubjectScan]:
    """The subject's scans in ``[since, until)`` after ``after``, oldest first."""
    start, after_id = _start(since, after)
    async with acquire(pool, "trace subject", timeout) as conn:
        rows = await conn.fetch(
            SUBJECT_QUERY, subject_id, start, until, after_id, limit, timeout=timeout
        )
    return [
        SubjectScan(
            r["place"],
            r["scanned_at"],
            r["scan_id"],
            r["terminal_id"],
            r["decision"],
            r["color"],
        )
        for r in rows
    ]
