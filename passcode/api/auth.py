"""Who is calling: a citizen (ID token), a terminal (its key) or an authority (admin key)."""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from passcode.api.body import bearer
from passcode.domain.identity import Citizen, IdentityError
from passcode.domain.privacy import secret_hash
from passcode.errors import Forbidden, TerminalRevoked, Unauthorized
from passcode.keys import ID_TOKENS, SETTINGS, TERMINALS
from passcode.store.terminals import KEY_PREFIX, Terminal


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


def require_admin(request: web.Request) -> str:
    """The admin credential, compared in constant time; returns who acted (for the record)."""
    expected = request.app[SETTINGS].admin_key
    key = bearer(request)
    if key is None:
        raise Unauthorized("send Authorization: Bearer <admin key>")
    if expected is None:
        raise Forbidden("the admin API is disabled: set PASSCODE_ADMIN_KEY")
    if not hmac.compare_digest(secret_hash(key), secret_hash(expected)):
        if key.count(".") == 2:
            raise Forbidden("a citizen token cannot be used on admin endpoints")
        raise Unauthorized("unknown admin key")
    return "admin"
