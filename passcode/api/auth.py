"""Who is calling: a citizen (ID token), a terminal (its key) or an authority (admin key)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from aiohttp import web

from passcode.api.accesslog import route_of
from passcode.api.body import bearer as _raw_bearer
from passcode.domain.identity import Citizen, IdentityError
from passcode.domain.model import Role
from passcode.domain.privacy import secret_hash
from passcode.errors import Forbidden, TerminalRevoked, Unauthorized
from passcode.keys import ID_TOKENS, POOL, SETTINGS, TERMINALS
from passcode.store import audit
from passcode.store.admins import ADMIN_KEY_PREFIX, find_credential
from passcode.store.terminals import KEY_PREFIX, Terminal


def bearer(request: web.Request) -> str | None:
    """The bearer credential, or None; 401 for one that is not well-formed text.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates, which cannot be encoded
    back for hashing: refused here, once for every kind of credential, rather than as a 500.
    """
    credential = _raw_bearer(request)
    if credential is None:
        return None
    try:
        credential.encode()
    except UnicodeEncodeError:
        raise Unauthorized("the credential is not valid UTF-8") from None
    return credential


def citizen_of(request: web.Request) -> Citizen:
    token = bearer(request)
    if token is None:
        raise Unauthorized("send Authorization: Bearer <ID token>")
    try:
        return request.app[ID_TOKENS].verify(token, now=time.time())
    except IdentityError as exc:
        raise Unauthorized("the ID token is not valid") from exc


async def terminal_of(request: web.Request) -> Terminal:
    key = bearer(request)
    if key is None:
        raise Unauthorized("send Authorization: Bearer <terminal key>")
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise Unauthorized("unknown terminal key")
    terminal: Terminal | None = await request.app[TERMINALS].lookup(key)
    if terminal is None:
        raise Unauthorized("unknown terminal key")
    if terminal.revoked:
        raise TerminalRevoked("this terminal has been revoked")
    return terminal


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on the admin API: a credential's name (as the audit log records it) and roles."""

    name: str
    roles: frozenset[Role]


ROOT = Actor("admin (PASSCODE_ADMIN_KEY)", frozenset(Role))


async def authorize(request: web.Request, role: Role, *, action: str) -> Actor:
    """The caller, if its credential carries ``role``: 401 for no or an unknown credential,
    403 (and an audit entry, outcome ``denied``) for one without the role.

    Credentials live hashed in ``admin_credentials`` (``passcode admin-key add``); the
    ``PASSCODE_ADMIN_KEY`` setting, when set, is a bootstrap credential with every role,
    compared in constant time.
    """
    key = bearer(request)
    if key is None:
        raise Unauthorized("send Authorization: Bearer <admin key>")
    settings = request.app[SETTINGS]
    expected = settings.admin_key
    actor: Actor | None = None
    if expected is not None and hmac.compare_digest(secret_hash(key), secret_hash(expected)):
        actor = ROOT
    elif key.startswith(ADMIN_KEY_PREFIX) and len(key) <= 128:
        found = await find_credential(request.app[POOL], key, timeout=settings.pg_timeout)
        if found is not None:
            actor = Actor(f"{found.name} ({found.id})", found.roles)
    if actor is None:
        if key.count(".") == 2:
            raise Forbidden("a citizen token cannot be used on admin endpoints")
        raise Unauthorized("unknown admin key")
    if role not in actor.roles:
        await audit.record(
            request.app[POOL],
            actor=actor.name,
            action=action,
            target={"path": route_of(request)},
            outcome="denied",
            timeout=settings.pg_timeout,
        )
        raise Forbidden(f"this credential lacks the {role.value} role")
    return actor
