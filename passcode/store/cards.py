"""Printed cards (纸质码) in PostgreSQL: plain SQL. Issuing and revoking commit with their audit
entry; revoking also bumps the ``cards`` catalog in the same transaction, so every replica
reloads its revoked serials (:mod:`passcode.service.cards`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from passcode.store import audit, catalogs
from passcode.store.catalogs import Catalog
from passcode.store.pg import Connection, Pool, acquire


@dataclass(frozen=True, slots=True)
class StoredCard:
    """A card's row with its holder's masked name (never a full name or an ID number)."""

    serial: bytes
    subject_id: bytes
    holder: str
    code: str
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None


_SELECT = (
    "SELECT c.serial, c.subject_id, s.name_masked, c.code, c.issued_by, c.issued_at, c.expires_at,"
    " c.revoked_at, c.revoked_by, c.revoke_reason FROM cards c JOIN subjects s"
    " ON s.id = c.subject_id"
)


def _card(row: asyncpg.Record) -> StoredCard:
    return StoredCard(
        serial=bytes(row["serial"]),
        subject_id=bytes(row["subject_id"]),
        holder=row["name_masked"],
        code=row["code"],
        issued_by=row["issued_by"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoke_reason=row["revoke_reason"],
    )


async def add_card(
    conn: Connection,
    *,
    serial: bytes,
    subject_id: bytes,
    code: str,
    issued_by: str,
    issued_at: datetime,
    expires_at: datetime,
) -> None:
    """The card and its audit entry (``card.issue``: serial, pseudonymous subject, expiry), in
    the caller's transaction."""
    await conn.execute(
        "INSERT INTO cards (serial, subject_id, code, issued_by, issued_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        serial,
        subject_id,
        code,
        issued_by,
        issued_at,
        expires_at,
    )
    await audit.append(
        conn,
        actor=issued_by,
        action="card.issue",
        target={
            "serial": serial.hex(),
            "subject": subject_id.hex(),
            "expires_at": expires_at.isoformat(),
        },
        rows=1,
    )


async def find_card(conn: Connection, serial: bytes) -> StoredCard | None:
    """The card with this serial, or None."""
    row = await conn.fetchrow(f"{_SELECT} WHERE c.serial = $1", serial)
    return None if row is None else _card(row)


async def read_card(pool: Pool, serial: bytes, *, timeout: float) -> StoredCard | None:
    """:func:`find_card` on a connection of its own."""
    async with acquire(pool, "read card", timeout) as conn:
        return await find_card(conn, serial)


async def revoke_card(
    conn: Connection, serial: bytes, *, actor: str, reason: str, timeout: float
) -> StoredCard | None:
    """Revoke a card not yet revoked, with its audit entry (``card.revoke``) and a bump of the
    ``cards`` catalog, in the caller's transaction; None (nothing written) when no card with
    this serial is still unrevoked."""
    row = await conn.fetchrow(
        "UPDATE cards SET revoked_at = now(), revoked_by = $2, revoke_reason = $3"
        " WHERE serial = $1 AND revoked_at IS NULL RETURNING serial",
        serial,
        actor,
        reason,
        timeout=timeout,
    )
    if row is None:
        return None
    await audit.append(
        conn,
        actor=actor,
        action="card.revoke",
        target={"serial": serial.hex(), "reason": reason},
        rows=1,
    )
    await catalogs.bump(conn, Catalog.CARDS, timeout=timeout)
    return await find_card(conn, serial)


async def revoked_serials(pool: Pool, *, since: datetime, timeout: float) -> frozenset[bytes]:
    """Serials of revoked cards that expire at or after ``since`` (older ones are refused as
    expired anyway, so no replica needs to keep them)."""
    async with acquire(pool, "read revoked cards", timeout) as conn:
        rows = await conn.fetch(
            "SELECT serial FROM cards WHERE revoked_at IS NOT NULL AND expires_at >= $1",
            since,
            timeout=timeout,
        )
    return frozenset(bytes(row["serial"]) for row in rows)
