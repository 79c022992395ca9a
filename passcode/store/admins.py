"""Admin credentials with roles: keys shown once and stored hashed (SHA-256)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from passcode.domain.model import Role
from passcode.domain.privacy import secret_hash
from passcode.store.pg import Connection, Pool, acquire

ADMIN_KEY_PREFIX = "pa_"


@dataclass(frozen=True, slots=True)
class AdminCredential:
    id: uuid.UUID
    name: str
    roles: frozenset[Role]
    created_at: datetime
    revoked_at: datetime | None = None


async def insert_credential(
    conn: Connection, name: str, roles: frozenset[Role]
) -> tuple[AdminCredential, str]:
    """A new credential and its key (returned once, never stored), on the caller's connection
    (inside its transaction when it has one)."""
    key = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
    credential_id = uuid.uuid4()
    created_at = await conn.fetchval(
        "INSERT INTO admin_credentials (id, name, key_hash, roles) VALUES ($1, $2, $3, $4)"
        " RETURNING created_at",
        credential_id,
        name,
        secret_hash(key),
        sorted(role.value for role in roles),
    )
    return AdminCredential(credential_id, name, roles, created_at), key


async def add_credential(
    pool: Pool, name: str, roles: frozenset[Role], *, timeout: float
) -> tuple[AdminCredential, str]:
    """:func:`insert_credential` on a connection of its own (test and bench set-up)."""
    async with acquire(pool, "add admin credential", timeout) as conn:
        return await insert_credential(conn, name, roles)


async def find_credential(pool: Pool, key: str, *, timeout: float) -> AdminCredential | None:
    """The live (not revoked) credential with this key, or None."""
    async with acquire(pool, "find admin credential", timeout) as conn:
        row = await conn.fetchrow(
            "SELECT id, name, roles, created_at FROM admin_credentials"
            " WHERE key_hash = $1 AND revoked_at IS NULL",
            secret_hash(key),
        )
    if row is None:
        return None
    return AdminCredential(
        row["id"], row["name"], frozenset(Role(r) for r in row["roles"]), row["created_at"]
    )


async def list_credentials(pool: Pool, *, timeout: float) -> list[AdminCredential]:
    async with acquire(pool, "list admin credentials", timeout) as conn:
        rows = await conn.fetch(
            "SELECT id, name, roles, created_at, revoked_at FROM admin_credentials"
            " ORDER BY created_at, id"
        )
    return [
        AdminCredential(
            r["id"],
            r["name"],
            frozenset(Role(x) for x in r["roles"]),
            r["created_at"],
            r["revoked_at"],
        )
        for r in rows
    ]


async def revoke(conn: Connection, credential_id: uuid.UUID) -> bool:
    """True when the credential exists (revoking twice is harmless), on the caller's
    connection."""
    found = await conn.fetchval(
        "UPDATE admin_credentials SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = $1 RETURNING id",
        credential_id,
    )
    return found is not None


async def revoke_credential(pool: Pool, credential_id: uuid.UUID, *, timeout: float) -> bool:
    """:func:`revoke` on a connection of its own."""
    async with acquire(pool, "revoke admin credential", timeout) as conn:
        return await revoke(conn, credential_id)
