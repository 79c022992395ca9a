"""Risk places (时空伴随) in PostgreSQL: markings, their progress, and one chunk of their work.

A marking names a place and a window; every subject who scanned there in the window gets an
exposure (one per subject and marking: ``source`` is ``risk_place:<marking id>``), and their
status is re-derived. The work goes in chunks of subjects in id order; each chunk's exposures,
statuses and progress commit together. A run (or a resumed one) works on the subjects that have
no exposure from this marking yet, so an interrupted job never does a chunk's work twice and a
subject whose scan reached Postgres late (below ``cursor_subject``, which is progress only) is
still exposed.

Exposures are dated (``valid_from`` and ``created_at``) when the marking was made: an authority's
override given after the marking settles the exposure, however late the job reaches the subject.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from passcode.domain.fields import rfc3339
from passcode.domain.model import Color, StatusReason
from passcode.store import audit
from passcode.store.pg import Connection, Pool, acquire
from passcode.store.transport import RedisError

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

# Errors that a later attempt clears (another transaction's locks, a moment's Redis trouble):
# the job retries them like an unavailable store instead of marking the marking failed.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
    asyncpg.SerializationError,
    RedisError,
)


@dataclass(frozen=True, slots=True)
class Marking:
    """A place marked risky for ``[since, until)``, with its job's progress."""

    id: uuid.UUID
    place: str
    since: datetime
    until: datetime
    color: Color
    note: str
    exposure_until: datetime | None  # None: until an authority's override settles it
    created_by: str
    created_at: datetime
    state: str
    affected: int | None  # subjects found; None until the job has looked
    processed: int
    cursor_subject: bytes | None  # the last subject of the last chunk done (progress only)
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def source(self) -> str:
        """The ``source`` of this marking's exposures."""
        return f"risk_place:{self.id}"


_COLUMNS = (
    "id, place, window_start, window_end, color, note, exposure_until, created_by, created_at,"
    " state, affected, processed, cursor_subject, started_at, finished_at, error"
)


def _marking(row: asyncpg.Record) -> Marking:
    return Marking(
        id=row["id"],
        place=row["place"],
        since=row["window_start"],
        until=row["window_end"],
        color=Color(row["color"]),
        note=row["note"],
        exposure_until=row["exposure_until"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        state=row["state"],
        affected=row["affected"],
        processed=row["processed"],
        cursor_subject=row["cursor_subject"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
    )


async def create_marking(
    pool: Pool,
    *,
    place: str,
    since: datetime,
    until: datetime,
    color: Color,
    note: str,
    exposure_until: datetime | None,
    created_by: str,
    timeout: float,
) -> tuple[Marking, bool]:
    """The marking of (place, since, until, color): created pending (True), or the one that
    already exists (False), whatever its note and exposure end; a ``failed`` one is set back to
    pending to run again. In the same transaction, the ``risk_place.mark`` audit entry by
    ``created_by`` (who asks now): the record commits before any job can start."""
    async with acquire(pool, "mark risk place", timeout) as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO risk_places (id, place, window_start, window_end, color, note,"  # noqa: S608  # constant names
            " exposure_until, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (place, window_start, window_end, color) DO NOTHING"
            f" RETURNING {_COLUMNS}",
            uuid.uuid4(),
            place,
            since,
            until,
            color.value,
            note,
            exposure_until,
            created_by,
            timeout=timeout,
        )
        created, restarted = row is not None, False
        if row is None:
            row = await conn.fetchrow(
                "UPDATE risk_places SET state = 'pending', error = NULL, finished_at = NULL"  # noqa: S608  # constant names
                " WHERE place = $1 AND window_start = $2 AND window_end = $3 AND color = $4"
                f" AND state = 'failed' RETURNING {_COLUMNS}",
                place,
                since,
                until,
                color.value,
                timeout=timeout,
            )
            restarted = row is not None
        if row is None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM risk_places"  # noqa: S608  # constant names
                " WHERE place = $1 AND window_start = $2 AND window_end = $3 AND color = $4",
                place,
                since,
                until,
                color.value,
                timeout=timeout,
            )
        assert row is not None  # the conflicting row; markings are never deleted
        marking = _marking(row)
        target: dict[str, Any] = {
            "marking_id": str(marking.id),
            "place": marking.place,
            "since": rfc3339(marking.since),
            "until": rfc3339(marking.until),
            "color": marking.color.value,
            "created": created,
        }
        if restarted:
            target["restarted"] = True
        await audit.append(
            conn,
            actor=created_by,
            action="risk_place.mark",
            target=target,
            rows=1 if created or restarted else 0,
        )
    return marking, created


async def get_marking(pool: Pool, marking_id: uuid.UUID, *, timeout: float) -> Marking | None:
    async with acquire(pool, "read risk place", timeout) as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM risk_places WHERE id = $1",  # noqa: S608  # constant names
            marking_id,
        )
    return None if row is None else _marking(row)


async def unfinished(
    pool: Pool, *, states: Sequence[str] = (PENDING, RUNNING), timeout: float
) -> list[uuid.UUID]:
    """Markings in ``states``, oldest first."""
    async with acquire(pool, "list risk places", timeout) as conn:
        rows = await conn.fetch(
            "SELECT id FROM risk_places WHERE state = ANY($1::text[]) ORDER BY created_at, id",
            list(states),
        )
    return [row["id"] for row in rows]


def lock_key(marking_id: uuid.UUID) -> int:
    """The marking's advisory lock key: 64 bits of its random id (the one-key lock space, apart
    from the two-key one the scan inserts use)."""
    return int.from_bytes(marking_id.bytes[:8], "big", signed=True)


async def try_lock(conn: Connection, marking_id: uuid.UUID, *, timeout: float) -> bool:
    """Take the marking's session advisory lock on this connection, if no one holds it: only
    its holder runs the job. A process that dies drops its connection and so the lock."""
    taken: bool = await conn.fetchval(
        "SELECT pg_try_advisory_lock($1::bigint)",
        lock_key(marking_id),
        timeout=timeout,
    )
    return taken


async def unlock(conn: Connection, marking_id: uuid.UUID, *, timeout: float) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock($1::bigint)",
        lock_key(marking_id),
        timeout=timeout,
    )


async def claim(
    conn: Connection, marking_id: uuid.UUID, *, states: Sequence[str], timeout: float
) -> Marking | None:
    """Mark it running if it is in ``states`` (under its lock); None otherwise."""
    row = await conn.fetchrow(
        "UPDATE risk_places SET state = 'running', error = NULL, finished_at = NULL,"  # noqa: S608  # constant names
        " started_at = coalesce(started_at, now())"
        f" WHERE id = $1 AND state = ANY($2::text[]) RETURNING {_COLUMNS}",
        marking_id,
        list(states),
        timeout=timeout,
    )
    return None if row is None else _marking(row)


@dataclass(frozen=True, slots=True)
class Affected:
    """Who scanned at the place in the window."""

    total: int  # subjects found
    todo: list[bytes]  # those without this marking's exposure yet, in id order


async def affected_subjects(conn: Connection, marking: Marking, *, timeout: float) -> Affected:
    """Every subject with a scan at the place in the window, and which of them still need this
    marking's exposure (the unique index on exposures (subject_id, source) answers each)."""
    rows = await conn.fetch(
        "SELECT s.subject_id, EXISTS (SELECT 1 FROM exposures AS e"
        " WHERE e.subject_id = s.subject_id AND e.source = $4) AS done"
        " FROM (SELECT DISTINCT subject_id FROM scans WHERE place = $1 AND scanned_at >= $2"
        " AND scanned_at < $3 AND subject_id IS NOT NULL) AS s ORDER BY s.subject_id",
        marking.place,
        marking.since,
        marking.until,
        marking.source,
        timeout=timeout,
    )
    return Affected(len(rows), [row["subject_id"] for row in rows if not row["done"]])


async def set_progress(
    conn: Connection,
    marking_id: uuid.UUID,
    *,
    processed: int,
    affected: int | None = None,
    cursor: bytes | None = None,
    timeout: float,
) -> None:
    """Record progress; ``affected`` and ``cursor`` only when given."""
    await conn.execute(
        "UPDATE risk_places SET processed = $2, affected = coalesce($3, affected),"
        " cursor_subject = coalesce($4, cursor_subject) WHERE id = $1",
        marking_id,
        processed,
        affected,
        cursor,
        timeout=timeout,
    )


async def finish(
    conn: Connection, marking_id: uuid.UUID, *, error: str | None = None, timeout: float
) -> None:
    """Done, or failed with ``error``."""
    await conn.execute(
        "UPDATE risk_places SET state = $2, error = $3, finished_at = now() WHERE id = $1",
        marking_id,
        DONE if error is None else FAILED,
        error,
        timeout=timeout,
    )


async def add_exposures(
    conn: Connection, marking: Marking, subjects: Sequence[bytes], *, timeout: float
) -> int:
    """Give each subject this marking's exposure (once: ``ON CONFLICT DO NOTHING``); returns
    how many were new. In the caller's transaction, with the subjects locked in id order."""
    status = await conn.execute(
        "INSERT INTO exposures (subject_id, color, reason, source, valid_from, valid_until,"
        " created_at) SELECT s, $2, $3, $4, $5, $6, $5 FROM unnest($1::bytea[]) AS s"
        " ON CONFLICT (subject_id, source) DO NOTHING",
        list(subjects),
        marking.color.value,
        StatusReason.RISK_PLACE.value,
        marking.source,
        marking.created_at,
        marking.exposure_until,
        timeout=timeout,
    )
    return int(status.rsplit(" ", 1)[1])
