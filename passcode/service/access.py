"""Admin access: who a key belongs to and whether it may act; credentials added and revoked.

Credentials live hashed in ``admin_credentials`` (``passcode admin-key add``); the
``PASSCODE_ADMIN_KEY`` setting, when set, is a bootstrap credential with every role, compared in
constant time. Adding or revoking a credential commits with its audit entry.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from passcode.domain.model import Role
from passcode.domain.privacy import secret_hash
from passcode.errors import Forbidden, Unauthorized
from passcode.store import admins, audit
from passcode.store.admins import ADMIN_KEY_PREFIX, AdminCredential
from passcode.store.pg import Pool, acquire


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on the admin API: a credential's name (as the audit log records it) and roles."""

    name: str
    roles: frozenset[Role]


ROOT = Actor("admin (PASSCODE_ADMIN_KEY)", frozenset(Role))


async def authorize(
    pool: Pool,
    key: str,
    role: Role,
    *,
    action: str,
    path: str,
    bootstrap_key: str | None,
    timeout: float,
) -> Actor:
    """The holder of ``key``, if it carries ``role``: Unauthorized for an unknown key,
    Forbidden for a citizen's token or a credential without the role (then recorded in the
    audit log as ``action`` at ``path``, outcome ``denied``)."""
    actor: Actor | None = None
    if bootstrap_key is not None and hmac.compare_digest(
        secret_hash(key), secret_hash(bootstrap_key)
    ):
        actor = ROOT
    elif key.startswith(ADMIN_KEY_PREFIX) and len(key) <= 128:
        found = await admins.find_credential(pool, key, timeout=timeout)
        if found is not None:
            actor = Actor(f"{found.name} ({found.id})", found.roles)
    if actor is None:
        if key.count(".") == 2:
            raise Forbidden("a citizen token cannot be used on admin endpoints")
        raise Unauthorized("unknown admin key")
    if role not in actor.roles:
        await audit.record(
            pool,
            actor=actor.name,
            action=action,
            target={"path": path},
            outcome="denied",
            timeout=timeout,
        )
        raise Forbidden(f"this credential lacks the {role.value} role")
    return actor


async def add_credential(
    pool: Pool, name: str, roles: frozenset[Role], *, actor: str, timeout: float
) -> tuple[AdminCredential, str]:
    """A new credential and its key (shown once); audited (``admin_key.add``, its id, name and
    roles) in the same transaction."""
    async with acquire(pool, "add admin credential", timeout) as conn, conn.transaction():
        made, key = await admins.insert_credential(conn, name, roles)
        await audit.append(
            conn,
            actor=actor,
            action="admin_key.add",
            target={"credential_id": str(made.id), "name": name, "roles": sorted(roles)},
            rows=1,
        )
    return made, key


async def revoke_credential(
    pool: Pool, credential_id: uuid.UUID, *, actor: str, timeout: float
) -> bool:
    """Revoke the credential, audited (``admin_key.revoke``) in the same transaction; False
    (and nothing recorded) when there is no such credential."""
    async with acquire(pool, "revoke admin credential", timeout) as conn, conn.transaction():
        found = await admins.revoke(conn, credential_id)
        if found:
            await audit.append(
                conn,
                actor=actor,
                action="admin_key.revoke",
                target={"credential_id": str(credential_id)},
                rows=1,
            )
    return found


async def list_credentials(pool: Pool, *, timeout: float) -> list[AdminCredential]:
    """Every credential, oldest first (names and roles; keys are never stored)."""
    return await admins.list_credentials(pool, timeout=timeout)
