"""Dead letters: scan-stream entries the drain could not store, kept with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from passcode.store.pg import Connection, Pool, acquire


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry as the drain took it from the stream, and why it was not stored."""

    stream: str
    entry_id: str
    fields: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class KeptLetter:
    """A dead letter as the table keeps it."""

    id: int
    letter: DeadLetter
    first_seen: datetime
    last_tried: datetime | None


async def add(pool: Pool, letters: Sequence[DeadLetter], *, timeout: float) -> None:
    """Keep ``letters`` (an entry already kept stays as first seen); committed on return, so
    the caller may then acknowledge the entries. Raises StoreUnavailable when Postgres is."""
    if not letters:
        return
    async with acquire(pool, "keep dead letters", timeout) as conn:
        await conn.executemany(
            "INSERT INTO scan_dead_letters (stream, entry_id, fields, reason)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (stream, entry_id) DO NOTHING",
            [(d.stream, d.entry_id, list(d.fields), d.reason) for d in letters],
            timeout=timeout,
        )


async def page(pool: Pool, *, after_id: int, limit: int, timeout: float) -> list[KeptLetter]:
    """Dead letters oldest first, after the ``after_id`` cursor."""
    async with acquire(pool, "read dead letters", timeout) as conn:
        rows = await conn.fetch(
            "SELECT id, stream, entry_id, fields, reason, first_seen, last_tried"
            " FROM scan_dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
            timeout=timeout,
        )
    return [
        KeptLetter(
            r["id"],
            DeadLetter(r["stream"], r["entry_id"], tuple(r["fields"]), r["reason"]),
            r["first_seen"],
            r["last_tried"],
        )
        for r in rows
    ]


async def count(pool: Pool, *, timeout: float) -> int:
    async with acquire(pool, "count dead letters", timeout) as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM scan_dead_letters", timeout=timeout)
    return found


async def settle(
    conn: Connection, *, stored: Sequence[int], failed: dict[int, str], timeout: float
) -> None:
    """After a replay: forget those now stored; note the new reason of those still failing.
    On the caller's connection, inside its transaction (with the replay's audit entry)."""
    if stored:
        await conn.execute(
            "DELETE FROM scan_dead_letters WHERE id = ANY($1::bigint[])",
            list(stored),
            timeout=timeout,
        )
    if failed:
        await conn.execute(
            "UPDATE scan_dead_letters d SET reason = f.reason, last_tried = now()"
            " FROM unnest($1::bigint[], $2::text[]) AS f(id, reason) WHERE d.id = f.id",
            list(failed),
            list(failed.values()),
            timeout=timeout,
        )
