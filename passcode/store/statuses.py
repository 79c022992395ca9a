"""Subjects, declarations, overrides and statuses in PostgreSQL: plain SQL, no rules.

What a status is and when it changes is :mod:`passcode.domain.status`'s; deriving one and
publishing it (PostgreSQL, then Redis, then marked in sync) is :mod:`passcode.service.status`'s.
A row's ``cached_version`` is the version Redis is known to hold; behind ``version``, the sync
worker pushes it again.

Bulk writers lock the subjects' rows in id order (:func:`lock_subjects`), so they cannot
deadlock with each other or with a single refresh (:func:`lock_subject`, one row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from passcode.domain.model import Color, StatusReason, Symptom
from passcode.domain.rules import Declaration, Ruling
from passcode.domain.status import LiveStatus, StoredStatus
from passcode.errors import IdempotencyMismatch
from passcode.store import audit
from passcode.store.pg import Connection, Pool, acquire


@dataclass(frozen=True, slots=True)
class StoredDeclaration:
    id: int
    declared_at: datetime
    created: bool


async def find_subject(pool: Pool, user_hash: bytes, *, timeout: float) -> bytes | None:
    async with acquire(pool, "find subject", timeout) as conn:
        found: bytes | None = await conn.fetchval(
            "SELECT id FROM subjects WHERE user_hash = $1", user_hash
        )
        return found


async def upsert_subject(
    conn: Connection, *, subject_id: bytes, user_hash: bytes, sealed: bytes, masked: str
) -> bytes:
    """The subject for this user, created on first contact; the masked name follows the token."""
    found: bytes = await conn.fetchval(
        "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_hash) DO UPDATE SET name_masked = EXCLUDED.name_masked"
        " RETURNING id",
        subject_id,
        user_hash,
        sealed,
        masked,
    )
    return found


async def ensure_subject(
    conn: Connection, *, subject_id: bytes, user_hash: bytes, sealed: bytes
) -> bytes:
    """The subject for a user id an authority names, created (nameless) if never seen; its row
    is locked (in a transaction: until it ends) before anything refers to it, as
    :func:`lock_subject` would lock it later, so two rulings for one subject cannot deadlock."""
    await conn.execute(
        "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked)"
        " VALUES ($1, $2, $3, '*') ON CONFLICT (user_hash) DO NOTHING",
        subject_id,
        user_hash,
        sealed,
    )
    found: bytes = await conn.fetchval(
        "SELECT id FROM subjects WHERE user_hash = $1 FOR UPDATE", user_hash
    )
    return found


async def subject_for_user(
    pool: Pool, *, subject_id: bytes, user_hash: bytes, sealed: bytes, timeout: float
) -> bytes:
    """:func:`ensure_subject` on a connection of its own."""
    async with acquire(pool, "subject for user", timeout) as conn:
        return await ensure_subject(conn, subject_id=subject_id, user_hash=user_hash, sealed=sealed)


async def add_declaration(
    conn: Connection,
    subject_id: bytes,
    decl: Declaration,
    *,
    idempotency_key: str | None,
    request_hash: bytes,
) -> StoredDeclaration:
    """Insert once per idempotency key; a retry gets the stored declaration back."""
    row = await conn.fetchrow(
        "INSERT INTO declarations (subject_id, idempotency_key, request_hash, temperature_c,"
        " symptoms, regions, close_contact, declared_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (subject_id, idempotency_key) DO NOTHING RETURNING id, declared_at",
        subject_id,
        idempotency_key,
        request_hash,
        *declaration_columns(decl),
    )
    if row is not None:
        return StoredDeclaration(row["id"], row["declared_at"], created=True)
    prior = await conn.fetchrow(
        "SELECT id, declared_at, request_hash FROM declarations"
        " WHERE subject_id = $1 AND idempotency_key = $2",
        subject_id,
        idempotency_key,
    )
    assert prior is not None
    if prior["request_hash"] != request_hash:
        raise IdempotencyMismatch("this Idempotency-Key was used for a different declaration")
    return StoredDeclaration(prior["id"], prior["declared_at"], created=False)


def declaration_columns(
    decl: Declaration,
) -> tuple[Decimal, list[str], list[str], bool, datetime]:
    """A declaration's columns (temperature, symptoms, regions, close contact, declared at) as
    they are stored, for an INSERT or a COPY."""
    return (
        Decimal(str(decl.temperature_c)),
        sorted(s.value for s in decl.symptoms),
        sorted(decl.regions),
        decl.close_contact,
        decl.declared_at,
    )


_DECLARATION_COLUMNS = "temperature_c, symptoms, regions, close_contact, declared_at"


def _declaration(row: asyncpg.Record) -> Declaration:
    return Declaration(
        declared_at=row["declared_at"],
        temperature_c=float(row["temperature_c"]),
        symptoms=frozenset(Symptom(s) for s in row["symptoms"]),
        regions=frozenset(row["regions"]),
        close_contact=row["close_contact"],
    )


def _ruling(row: asyncpg.Record) -> Ruling:
    return Ruling(
        color=Color(row["color"]),
        reason=StatusReason(row["reason"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        created_at=row["created_at"],
    )


def _stored(row: asyncpg.Record) -> StoredStatus:
    color, reason = row["color"], row["reason"]
    return StoredStatus(
        color=Color(color) if color is not None else None,
        reason=StatusReason(reason) if reason is not None else None,
        valid_until=row["valid_until"],
        version=row["version"],
    )


def _live(row: asyncpg.Record) -> LiveStatus:
    color = row["color"]
    return LiveStatus(
        color=Color(color) if color is not None else None,
        version=row["version"],
        valid_until=int(row["valid_until"].timestamp()),
        holder=row["name_masked"],
    )


_RULING_COLUMNS = "subject_id, color, reason, valid_from, valid_until, created_at"
Facts = tuple[Declaration | None, list[Ruling], list[Ruling]]


async def facts(conn: Connection, subject_id: bytes, now: datetime) -> Facts:
    """What one subject's status is derived from: the latest declaration, and the overrides
    and exposures not over at ``now``."""
    found = await bulk_facts(conn, [subject_id], now, timeout=None, index_only=False)
    return found[0].get(subject_id), found[1].get(subject_id, []), found[2].get(subject_id, [])


async def bulk_facts(
    conn: Connection,
    subject_ids: list[bytes],
    now: datetime,
    *,
    timeout: float | None,
    index_only: bool = True,
) -> tuple[dict[bytes, Declaration], dict[bytes, list[Ruling]], dict[bytes, list[Ruling]]]:
    """:func:`facts` for many subjects: one query per kind of fact.

    ``index_only``: index lookups only, for the rest of the caller's transaction: a few
    thousand ids out of tables not much larger looked cheaper to scan whole to the planner (4x
    slower measured, and worse on ``exposures`` as a job fills it faster than statistics
    follow).
    """
    if index_only:
        await conn.execute("SET LOCAL enable_seqscan = off", timeout=timeout)
    decl_rows = await conn.fetch(
        f"SELECT DISTINCT ON (subject_id) subject_id, {_DECLARATION_COLUMNS} FROM declarations"  # noqa: S608  # constant names
        " WHERE subject_id = ANY($1::bytea[]) ORDER BY subject_id, declared_at DESC, id DESC",
        subject_ids,
        timeout=timeout,
    )
    declarations = {r["subject_id"]: _declaration(r) for r in decl_rows}
    window = "subject_id = ANY($1::bytea[]) AND (valid_until IS NULL OR valid_until > $2)"
    rulings: list[dict[bytes, list[Ruling]]] = []
    for table in ("overrides", "exposures"):
        found: dict[bytes, list[Ruling]] = {}
        rows = await conn.fetch(
            f"SELECT {_RULING_COLUMNS} FROM {table} WHERE {window}",  # noqa: S608  # constant names
            subject_ids,
            now,
            timeout=timeout,
        )
        for row in rows:
            found.setdefault(row["subject_id"], []).append(_ruling(row))
        rulings.append(found)
    return declarations, rulings[0], rulings[1]


async def lock_subject(conn: Connection, subject_id: bytes) -> str | None:
    """Lock one subject's row for the transaction (concurrent refreshes serialise, so a version
    only moves forward); its masked name, or None for an unknown subject."""
    holder: str | None = await conn.fetchval(
        "SELECT name_masked FROM subjects WHERE id = $1 FOR UPDATE", subject_id
    )
    return holder


async def lock_subjects(
    conn: Connection, subject_ids: Sequence[bytes], *, timeout: float
) -> dict[bytes, str]:
    """Lock the subjects' rows for the transaction, in id order (as every bulk writer does, so
    they cannot deadlock; :func:`lock_subject` holds one at a time). Returns the masked name
    of each subject that exists, in id order; unknown ids are left out."""
    rows = await conn.fetch(
        "SELECT id, name_masked FROM subjects WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE",
        list(subject_ids),
        timeout=timeout,
    )
    return {row["id"]: row["name_masked"] for row in rows}


async def stored_statuses(
    conn: Connection, subject_ids: Sequence[bytes], *, timeout: float | None
) -> dict[bytes, StoredStatus]:
    """The statuses on file for these subjects (none for a subject never derived)."""
    rows = await conn.fetch(
        "SELECT subject_id, color, reason, valid_until, version FROM statuses"
        " WHERE subject_id = ANY($1::bytea[])",
        list(subject_ids),
        timeout=timeout,
    )
    return {r["subject_id"]: _stored(r) for r in rows}


async def write_statuses(
    conn: Connection,
    rows: Sequence[tuple[bytes, StoredStatus]],
    *,
    now: datetime,
    timeout: float | None,
) -> None:
    """Insert or replace these statuses in one statement (``updated_at`` = ``now``)."""
    if not rows:
        return
    await conn.execute(
        "INSERT INTO statuses (subject_id, color, reason, valid_until, version, updated_at)"
        " SELECT u.subject_id, u.color, u.reason, u.valid_until, u.version, $6"
        " FROM unnest($1::bytea[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])"
        " AS u (subject_id, color, reason, valid_until, version)"
        " ON CONFLICT (subject_id) DO UPDATE SET color = EXCLUDED.color,"
        " reason = EXCLUDED.reason, valid_until = EXCLUDED.valid_until,"
        " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        [subject for subject, _ in rows],
        [s.color.value if s.color is not None else None for _, s in rows],
        [s.reason.value if s.reason is not None else None for _, s in rows],
        [s.valid_until for _, s in rows],
        [s.version for _, s in rows],
        now,
        timeout=timeout,
    )


async def mark_cached(
    conn: Connection, items: Sequence[tuple[bytes, LiveStatus]], *, timeout: float
) -> None:
    """Record that Redis holds these versions (a row's ``cached_version`` never moves back).

    More than one row: in a transaction, rows locked in subject order first, as every bulk
    writer locks them; a multi-row UPDATE locks in plan order, which could deadlock with a
    concurrent bulk write.
    """
    subjects = [subject for subject, _ in items]
    versions = [live.version for _, live in items]
    # The ANY makes the rows index lookups; joined on the array alone, the planner
    # merge-joined the whole key range up to the last id, every time.
    update = (
        "UPDATE statuses AS s SET cached_version = c.version"
        " FROM unnest($1::bytea[], $2::bigint[]) AS c (subject_id, version)"
        " WHERE s.subject_id = ANY($1::bytea[]) AND s.subject_id = c.subject_id"
        " AND s.cached_version < c.version"
    )
    if len(items) == 1:
        await conn.execute(update, subjects, versions, timeout=timeout)
        return
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM statuses WHERE subject_id = ANY($1::bytea[])"
            " ORDER BY subject_id FOR UPDATE",
            sorted(subjects),
            timeout=timeout,
        )
        await conn.execute(update, subjects, versions, timeout=timeout)


_LIVE = (
    "SELECT s.subject_id, s.color, s.valid_until, s.version, j.name_masked FROM statuses s"
    " JOIN subjects j ON j.id = s.subject_id"
)


async def live_status(conn: Connection, subject_id: bytes) -> LiveStatus | None:
    """The stored status as verify reads it (its fallback when Redis cannot answer)."""
    row = await conn.fetchrow(f"{_LIVE} WHERE s.subject_id = $1", subject_id)
    return None if row is None else _live(row)


async def read_status(pool: Pool, subject_id: bytes, *, timeout: float) -> LiveStatus | None:
    """:func:`live_status` on a connection of its own."""
    async with acquire(pool, "read status", timeout) as conn:
        return await live_status(conn, subject_id)


async def unsynced(conn: Connection, *, limit: int) -> list[tuple[bytes, LiveStatus]]:
    """Up to ``limit`` statuses whose version Redis is not known to hold."""
    rows = await conn.fetch(f"{_LIVE} WHERE s.cached_version < s.version LIMIT $1", limit)
    return [(row["subject_id"], _live(row)) for row in rows]


async def add_override(
    conn: Connection,
    subject_id: bytes,
    *,
    color: Color,
    reason: StatusReason,
    valid_from: datetime,
    valid_until: datetime | None,
    created_by: str,
) -> int:
    """The ruling and its audit entry (``override.add``), in the caller's transaction."""
    override_id: int = await conn.fetchval(
        "INSERT INTO overrides (subject_id, color, reason, valid_from, valid_until,"
        " created_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        subject_id,
        color.value,
        reason.value,
        valid_from,
        valid_until,
        created_by,
    )
    await audit.append(
        conn,
        actor=created_by,
        action="override.add",
        target={
            "override_id": override_id,
            "subject": subject_id.hex(),
            "color": color.value,
            "reason": reason.value,
        },
        rows=1,
    )
    return override_id
