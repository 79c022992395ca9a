"""Who is calling: a citizen (ID token), a terminal (its key) or an authority (admin key)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from passcode.api.accesslog import route_of
from passcode.api.body import bearer as _raw_bearer
from passcode.domain.identity import Citizen, IdentityError
from passcode.domain.model import Role
from passcode.errors import TerminalRevoked, Unauthorized
from passcode.keys import ACTOR, POOL, SETTINGS, SIGN_IN, TERMINALS
from passcode.service import access
from passcode.service.access import Actor
from passcode.service.terminals import KEY_PREFIX, Terminal


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


async def citizen_of(request: web.Request) -> Citizen:
    """The citizen the request's ID token names; 401 for none or one not valid. Async: a token
    of a key the service does not hold yet waits for one bounded fetch of the provider's keys
    (:class:`passcode.service.oidc.SignIn`); known keys never wait."""
    token = bearer(request)
    if token is None:
        raise Unauthorized("send Authorization: Bearer <ID token>")
    try:
        return await request.app[SIGN_IN].citizen(token)
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


async def authorize(request: web.Request, role: Role, *, action: str) -> Actor:
    """The caller, if its credential carries ``role``: 401 for no or an unknown credential,
    403 (and an audit entry, outcome ``denied``) for one without the role
    (:func:`passcode.service.access.authorize`)."""
    key = bearer(request)
    if key is None:
        raise Unauthorized("send Authorization: Bearer <admin key>")
    settings = request.app[SETTINGS]
    return await access.authorize(
        request.app[POOL],
        key,
        role,
        action=action,
        path=route_of(request),
        bootstrap_key=settings.admin_key,
        timeout=settings.pg_timeout,
    )


def requires(handler: Handler, role: Role, action: str) -> Handler:
    """``handler`` reached only by a caller holding ``role`` (:func:`authorize`, a refusal
    audited as ``action``); the caller is ``actor_of(request)`` inside. The route table
    (``passcode.api.routes``) is the one place that names an endpoint's role and action."""

    async def authorized(request: web.Request) -> web.StreamResponse:
        request[ACTOR] = await authorize(request, role, action=action)
        return await handler(request)

    authorized.__name__ = authorized.__qualname__ = getattr(handler, "__name__", "handler")
    authorized.__doc__ = handler.__doc__
    return authorized


def actor_of(request: web.Request) -> Actor:
    """Who called an admin endpoint, as :func:`requires` authorized them."""
    return request[ACTOR]
