"""Subjects, declarations and statuses: the one place a status is derived and written.

A status is written to PostgreSQL first (the truth, version bumped when colour or reason
changes) and then to Redis. When the Redis write fails the row keeps ``cached_version`` behind
``version`` and :func:`sync_unsynced` pushes it later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from passcode.domain.model import Color, StatusReason, Symptom
from passcode.domain.rules import Declaration, Policy, Ruling, derive_status
from passcode.errors import IdempotencyMismatch, StoreUnavailable
from passcode.store import audit
from passcode.store.cache import Cache, LiveStatus
from passcode.store.pg import Connection, Pool, acquire

log = logging.getLogger(__name__)


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


async def subject_for_user(
    pool: Pool, *, subject_id: bytes, user_hash: bytes, sealed: bytes, timeout: float
) -> bytes:
    """The subject for a user id an authority names, created (nameless) if never seen."""
    async with acquire(pool, "subject for user", timeout) as conn:
        await conn.execute(
            "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked)"
            " VALUES ($1, $2, $3, '*') ON CONFLICT (user_hash) DO NOTHING",
            subject_id,
            user_hash,
            sealed,
        )
        found: bytes = await conn.fetchval(
            "SELECT id FROM subjects WHERE user_hash = $1", user_hash
        )
        return found


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
        Decimal(str(decl.temperature_c)),
        sorted(s.value for s in decl.symptoms),
        sorted(decl.regions),
        decl.close_contact,
        decl.declared_at,
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


def _ruling(row: asyncpg.Record) -> Ruling:
    return Ruling(
        color=Color(row["color"]),
        reason=StatusReason(row["reason"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        created_at=row["created_at"],
    )


async def _facts(
    conn: Connection, subject_id: bytes, now: datetime
) -> tuple[Declaration | None, list[Ruling], list[Ruling]]:
    decl_row = await conn.fetchrow(
        "SELECT temperature_c, symptoms, regions, close_contact, declared_at FROM declarations"
        " WHERE subject_id = $1 ORDER BY declared_at DESC, id DESC LIMIT 1",
        subject_id,
    )
    declaration = None
    if decl_row is not None:
        declaration = Declaration(
            declared_at=decl_row["declared_at"],
            temperature_c=float(decl_row["temperature_c"]),
            symptoms=frozenset(Symptom(s) for s in decl_row["symptoms"]),
            regions=frozenset(decl_row["regions"]),
            close_contact=decl_row["close_contact"],
        )
    window = "subject_id = $1 AND (valid_until IS NULL OR valid_until > $2)"
    overrides = await conn.fetch(
        f"SELECT color, reason, valid_from, valid_until, created_at FROM overrides WHERE {window}",  # noqa: S608  # constant fragment
        subject_id,
        now,
    )
    exposures = await conn.fetch(
        f"SELECT color, reason, valid_from, valid_until, created_at FROM exposures WHERE {window}",  # noqa: S608  # constant fragment
        subject_id,
        now,
    )
    return declaration, [_ruling(r) for r in overrides], [_ruling(r) for r in exposures]


def _live(row: asyncpg.Record | dict[str, Any], holder: str) -> LiveStatus:
    color = row["color"]
    return LiveStatus(
        color=Color(color) if color is not None else None,
        version=row["version"],
        valid_until=int(row["valid_until"].timestamp()),
        holder=holder,
    )


async def refresh_status(
    pool: Pool, cache: Cache, subject_id: bytes, *, now: datetime, policy: Policy, timeout: float
) -> LiveStatus | None:
    """Derive the status from the facts, store it (Postgres, then Redis) and return it.

    The subject row is locked for the transaction so concurrent refreshes serialise and the
    version only ever moves forward. Returns None for an unknown subject.
    """
    async with acquire(pool, "refresh status", timeout) as conn, conn.transaction():
        holder = await conn.fetchval(
            "SELECT name_masked FROM subjects WHERE id = $1 FOR UPDATE", subject_id
        )
        if holder is None:
            return None
        declaration, overrides, exposures = await _facts(conn, subject_id, now)
        derived = derive_status(declaration, overrides, exposures, now=now, policy=policy)
        color = derived.color.value if derived else None
        reason = derived.reason.value if derived else None
        valid_until = derived.valid_until if derived else now + policy.declaration_ttl
        current = await conn.fetchrow(
            "SELECT color, reason, version FROM statuses WHERE subject_id = $1", subject_id
        )
        if current is None:
            version = 1
        elif (current["color"], current["reason"]) != (color, reason):
            version = current["version"] + 1
        else:
            version = current["version"]
        row = await conn.fetchrow(
            "INSERT INTO statuses (subject_id, color, reason, valid_until, version, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (subject_id) DO UPDATE SET color = EXCLUDED.color,"
            " reason = EXCLUDED.reason, valid_until = EXCLUDED.valid_until,"
            " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
            " RETURNING color, valid_until, version",
            subject_id,
            color,
            reason,
            valid_until,
            version,
            now,
        )
    assert row is not None  # INSERT … RETURNING always returns the row
    live = _live(row, holder)
    await push_to_cache(pool, cache, subject_id, live, timeout=timeout)
    return live


@dataclass(frozen=True, slots=True)
class StatusChanges:
    """What a bulk re-derivation wrote: the rows that changed (with their new hot copy), and
    how many of them got a new version (colour or reason changed, or a first status)."""

    written: list[tuple[bytes, LiveStatus]]
    bumped: int


async def lock_subjects(
    conn: Connection, subject_ids: Sequence[bytes], *, timeout: float
) -> dict[bytes, str]:
    """Lock the subjects' rows for the transaction, in id order (as every bulk writer does, so
    they cannot deadlock; :func:`refresh_status` holds one at a time). Returns the masked name
    of each subject that exists, in id order; unknown ids are left out."""
    rows = await conn.fetch(
        "SELECT id, name_masked FROM subjects WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE",
        list(subject_ids),
        timeout=timeout,
    )
    return {row["id"]: row["name_masked"] for row in rows}


_RULING_COLUMNS = "subject_id, color, reason, valid_from, valid_until, created_at"


async def _bulk_facts(
    conn: Connection, subject_ids: list[bytes], now: datetime, timeout: float
) -> tuple[dict[bytes, Declaration], dict[bytes, list[Ruling]], dict[bytes, list[Ruling]]]:
    """:func:`_facts` for many subjects: one query per kind of fact.

    Index lookups only, for the rest of the caller's transaction: a few thousand ids out of
    tables not much larger looked cheaper to scan whole to the planner (4x slower measured,
    and worse on ``exposures`` as a job fills it faster than statistics follow).
    """
    await conn.execute("SET LOCAL enable_seqscan = off", timeout=timeout)
    decl_rows = await conn.fetch(
        "SELECT DISTINCT ON (subject_id) subject_id, temperature_c, symptoms, regions,"
        " close_contact, declared_at FROM declarations WHERE subject_id = ANY($1::bytea[])"
        " ORDER BY subject_id, declared_at DESC, id DESC",
        subject_ids,
        timeout=timeout,
    )
    declarations = {
        r["subject_id"]: Declaration(
            declared_at=r["declared_at"],
            temperature_c=float(r["temperature_c"]),
            symptoms=frozenset(Symptom(s) for s in r["symptoms"]),
            regions=frozenset(r["regions"]),
            close_contact=r["close_contact"],
        )
        for r in decl_rows
    }
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


async def write_statuses(
    conn: Connection, holders: dict[bytes, str], *, now: datetime, policy: Policy, timeout: float
) -> StatusChanges:
    """:func:`refresh_status`'s Postgres half for subjects already locked by
    :func:`lock_subjects` in the caller's transaction: derive each status from the facts and
    write, in one statement, only the rows that change; the version moves only when colour or
    reason does. Nothing is written to Redis here (see :func:`push_statuses_to_cache`)."""
    ids = list(holders)
    declarations, overrides, exposures = await _bulk_facts(conn, ids, now, timeout)
    current = {
        r["subject_id"]: r
        for r in await conn.fetch(
            "SELECT subject_id, color, reason, valid_until, version FROM statuses"
            " WHERE subject_id = ANY($1::bytea[])",
            ids,
            timeout=timeout,
        )
    }
    changed: list[tuple[bytes, str | None, str | None, datetime, int]] = []
    bumped = 0
    for subject in ids:
        derived = derive_status(
            declarations.get(subject),
            overrides.get(subject, ()),
            exposures.get(subject, ()),
            now=now,
            policy=policy,
        )
        color = derived.color.value if derived else None
        reason = derived.reason.value if derived else None
        valid_until = derived.valid_until if derived else now + policy.declaration_ttl
        before = current.get(subject)
        if before is None:
            version = 1
        elif (before["color"], before["reason"]) != (color, reason):
            version = before["version"] + 1
        elif before["valid_until"] == valid_until or (
            # "No status" stays no status: its horizon is only when to look again, and
            # rewriting it on every run would make a re-run change rows.
            color is None and before["valid_until"] > now
        ):
            continue
        else:
            version = before["version"]
        if before is None or version != before["version"]:
            bumped += 1
        changed.append((subject, color, reason, valid_until, version))
    if changed:
        await conn.execute(
            "INSERT INTO statuses (subject_id, color, reason, valid_until, version, updated_at)"
            " SELECT u.subject_id, u.color, u.reason, u.valid_until, u.version, $6"
            " FROM unnest($1::bytea[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])"
            " AS u (subject_id, color, reason, valid_until, version)"
            " ON CONFLICT (subject_id) DO UPDATE SET color = EXCLUDED.color,"
            " reason = EXCLUDED.reason, valid_until = EXCLUDED.valid_until,"
            " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
            [c[0] for c in changed],
            [c[1] for c in changed],
            [c[2] for c in changed],
            [c[3] for c in changed],
            [c[4] for c in changed],
            now,
            timeout=timeout,
        )
    written = [
        (
            subject,
            LiveStatus(
                color=Color(color) if color is not None else None,
                version=version,
                valid_until=int(valid_until.timestamp()),
                holder=holders[subject],
            ),
        )
        for subject, color, _, valid_until, version in changed
    ]
    return StatusChanges(written=written, bumped=bumped)


async def refresh_statuses(
    pool: Pool,
    cache: Cache,
    subject_ids: Sequence[bytes],
    *,
    now: datetime,
    policy: Policy,
    timeout: float,
) -> StatusChanges:
    """:func:`refresh_status` for many subjects at once: set-based reads of the facts, one
    write for the rows that change (in one transaction, rows locked in id order), then one
    pipelined Redis pass for those. Unknown subjects are skipped."""
    async with acquire(pool, "refresh statuses", timeout) as conn, conn.transaction():
        holders = await lock_subjects(conn, sorted(set(subject_ids)), timeout=timeout)
        changes = await write_statuses(conn, holders, now=now, policy=policy, timeout=timeout)
    await push_statuses_to_cache(pool, cache, changes.written, timeout=timeout)
    return changes


async def push_statuses_to_cache(
    pool: Pool, cache: Cache, items: Sequence[tuple[bytes, LiveStatus]], *, timeout: float
) -> int:
    """:func:`push_to_cache` for many: one pipelined Redis pass, then one UPDATE recording them
    in sync. Returns how many Redis took (0 when it failed: the sync worker repairs those)."""
    if not items:
        return 0
    try:
        written = await cache.put_statuses(items)
        subjects = sorted(subject for subject, _ in items)
        async with acquire(pool, "mark cached", timeout) as conn, conn.transaction():
            # Rows locked in subject order first, as every bulk writer locks them: a multi-row
            # UPDATE locks in plan order, which could deadlock with a concurrent write_statuses.
            await conn.execute(
                "SELECT 1 FROM statuses WHERE subject_id = ANY($1::bytea[])"
                " ORDER BY subject_id FOR UPDATE",
                subjects,
                timeout=timeout,
            )
            await conn.execute(
                # The ANY makes the rows index lookups; joined on the array alone, the
                # planner merge-joined the whole key range up to the last id, every time.
                "UPDATE statuses AS s SET cached_version = c.version"
                " FROM unnest($1::bytea[], $2::bigint[]) AS c (subject_id, version)"
                " WHERE s.subject_id = ANY($1::bytea[]) AND s.subject_id = c.subject_id"
                " AND s.cached_version < c.version",
                [subject for subject, _ in items],
                [live.version for _, live in items],
                timeout=timeout,
            )
    except StoreUnavailable:
        log.warning("statuses written to postgres but not yet to redis; the sync worker retries")
        return 0
    return written


async def push_to_cache(
    pool: Pool, cache: Cache, subject_id: bytes, live: LiveStatus, *, timeout: float
) -> bool:
    """Write the hot copy and record that it is in sync; a failure is repaired later."""
    try:
        await cache.put_status(subject_id, live)
        async with acquire(pool, "mark cached", timeout) as conn:
            await conn.execute(
                "UPDATE statuses SET cached_version = $2"
                " WHERE subject_id = $1 AND cached_version < $2",
                subject_id,
                live.version,
            )
    except StoreUnavailable:
        log.warning("status written to postgres but not yet to redis; the sync worker retries")
        return False
    return True


async def read_status(pool: Pool, subject_id: bytes, *, timeout: float) -> LiveStatus | None:
    """The stored status straight from Postgres (verify's fallback when Redis fails)."""
    async with acquire(pool, "read status", timeout) as conn:
        row = await conn.fetchrow(
            "SELECT s.color, s.valid_until, s.version, j.name_masked FROM statuses s"
            " JOIN subjects j ON j.id = s.subject_id WHERE s.subject_id = $1",
            subject_id,
        )
    if row is None:
        return None
    return _live(row, row["name_masked"])


async def sync_unsynced(pool: Pool, cache: Cache, *, limit: int, timeout: float) -> int:
    """Push statuses whose Redis write failed earlier; returns how many were repaired."""
    async with acquire(pool, "find unsynced", timeout) as conn:
        rows = await conn.fetch(
            "SELECT s.subject_id, s.color, s.valid_until, s.version, j.name_masked"
            " FROM statuses s JOIN subjects j ON j.id = s.subject_id"
            " WHERE s.cached_version < s.version LIMIT $1",
            limit,
        )
    repaired = 0
    for row in rows:
        if await push_to_cache(
            pool, cache, row["subject_id"], _live(row, row["name_masked"]), timeout=timeout
        ):
            repaired += 1
    return repaired


async def add_override(
    pool: Pool,
    subject_id: bytes,
    *,
    color: Color,
    reason: StatusReason,
    valid_from: datetime,
    valid_until: datetime | None,
    created_by: str,
    timeout: float,
) -> int:
    """The ruling and its audit entry (``override.add``), committed together."""
    async with acquire(pool, "add override", timeout) as conn, conn.transaction():
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
