"""The audit log: append-only (the table refuses UPDATE, DELETE and TRUNCATE)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from passcode.store.pg import Connection, Pool, acquire


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    outcome: str
    target: dict[str, Any]
    rows: int | None


async def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: dict[str, Any],
    rows: int | None = None,
    outcome: str = "ok",
) -> None:
    """One entry, on the caller's connection (inside its transaction when it has one, so an
    action and its record commit together)."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, outcome, target, rows)"
        " VALUES ($1, $2, $3, $4::jsonb, $5)",
        actor,
        action,
        outcome,
        json.dumps(target, ensure_ascii=False, sort_keys=True),
        rows,
    )


async def record(
    pool: Pool,
    *,
    actor: str,
    action: str,
    target: dict[str, Any],
    rows: int | None = None,
    outcome: str = "ok",
    timeout: float,
) -> None:
    """:func:`append` on a connection of its own."""
    async with acquire(pool, "write audit log", timeout) as conn:
        await append(conn, actor=actor, action=action, target=target, rows=rows, outcome=outcome)


async def read(
    pool: Pool,
    *,
    since: datetime,
    until: datetime,
    actor: str | None,
    action: str | None,
    after_id: int,
    limit: int,
    timeout: float,
) -> list[AuditEntry]:
    """Entries in ``[since, until)``, oldest first, after the ``after_id`` cursor."""
    async with acquire(pool, "read audit log", timeout) as conn:
        rows = await conn.fetch(
            "SELECT id, at, actor, action, outcome, target, rows FROM audit_log"
            " WHERE at >= $1 AND at < $2 AND id > $3"
            " AND ($4::text IS NULL OR actor = $4) AND ($5::text IS NULL OR action = $5)"
            " ORDER BY id LIMIT $6",
            since,
            until,
            after_id,
            actor,
            action,
            limit,
        )
    return [
        AuditEntry(
            r["id"],
            r["at"],
            r["actor"],
            r["action"],
            r["outcome"],
            json.loads(r["target"]),
            r["rows"],
        )
        for r in rows
    ]
