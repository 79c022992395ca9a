"""Admin credentials with roles: keys shown once and stored hashed (SHA-256)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from passcode.domain.model import Role
from passcode.domain.privacy import secret_hash
from passcode.store.pg import Pool, acquire

ADMIN_KEY_PREFIX = "pa_"


@dataclass(frozen=True, slots=True)
class AdminCredential:
    id: uuid.UUID
    name: str
    roles: frozenset[Role]
    created_at: datetime
    revoked_at: datetime | None = None


async def add_credential(
    pool: Pool, name: str, roles: frozenset[Role], *, timeout: float
) -> tuple[AdminCredential, str]:
    """A new credential and its key (returned once, never stored)."""
    key = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
    credential_id = uuid.uuid4()
    async with acquire(pool, "add admin credential", timeout) as conn:
        created_at = await conn.fetchval(
            "INSERT INTO admin_credentials (id, name, key_hash, roles) VALUES ($1, $2, $3, $4)"
            " RETURNING created_at",
            credential_id,
            name,
            secret_hash(key),
            sorted(role.value for role in roles),
        )
    return AdminCredential(credential_id, name, roles, created_at), key


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


async def revoke_credential(pool: Pool, credential_id: uuid.UUID, *, timeout: float) -> bool:
    """True when the credential exists (revoking twice is harmless)."""
    async with acquire(pool, "revoke admin credential", timeout) as conn:
        found = await conn.fetchval(
            "UPDATE admin_credentials SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = $1 RETURNING id",
            credential_id,
        )
    return found is not None
