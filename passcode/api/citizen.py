"""Citizen API (DESIGN §4): declare, and fetch one's own pass as JSON, PNG or SVG."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from passcode.api.auth import citizen_of
from passcode.api.body import read_json
from passcode.api.responses import json_response, rfc3339, status_body
from passcode.api.schemas import DECLARATION_REQUEST, compile_schema
from passcode.domain import fields, qr
from passcode.domain.clock import utc_now
from passcode.domain.identity import Citizen
from passcode.domain.rules import Declaration
from passcode.errors import BadRequest, ValidationFailed
from passcode.keys import CITIZEN_LIMITS, CITIZENS, SEALER, SETTINGS
from passcode.service.citizen import PassView

_validate_declaration = compile_schema(DECLARATION_REQUEST)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
NO_STORE = {"Cache-Control": "no-store"}


async def _limited_citizen(request: web.Request) -> Citizen:
    """The caller, once its rate limit (GCRA in Redis, keyed by the user hash) lets it pass.

    As on verify, the GCRA call is queued in the same turn as the request's first Redis call
    (the status read), so it shares that write (see :meth:`Limiter.speculate`).
    """
    citizen = await citizen_of(request)
    limits = request.app[CITIZEN_LIMITS]
    user_hash = request.app[SEALER].user_hash(citizen.issuer, citizen.user_id)
    key = limits.key(user_hash, user_hash.hex())
    if not limits.speculate(key):
        await limits.check(key)
    return citizen


async def declare(request: web.Request) -> web.Response:
    citizen = await _limited_citizen(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1-128 printable ASCII characters")
    data = await read_json(
        request, limit=request.app[SETTINGS].max_body, validate=_validate_declaration
    )
    service = request.app[CITIZENS]
    try:
        declaration = Declaration.from_body(data, declared_at=utc_now(service.clock))
    except fields.FieldError as exc:  # the schema checked the rest: only a region can fail
        raise ValidationFailed(f"regions_visited {exc}", errors=["regions_visited"]) from exc
    stored, live = await service.declare(citizen, declaration, idempotency_key=key, body=data)
    body = {
        "declaration_id": stored.id,
        "declared_at": rfc3339(stored.declared_at),
        "status": status_body(live),
    }
    headers = dict(NO_STORE)
    if not stored.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status=201, headers=headers)


def _pass_body(view: PassView) -> dict[str, Any]:
    return {
        "code": view.code,
        "color": view.color.value,
        "issued_at": rfc3339(view.issued_at),
        "expires_at": rfc3339(view.expires_at),
        "refresh_in": view.refresh_in,
        "holder": {"name": view.holder},
    }


async def get_pass(request: web.Request) -> web.Response:
    view = await request.app[CITIZENS].current_pass(await _limited_citizen(request))
    return json_response(_pass_body(view), headers=NO_STORE)


async def get_pass_png(request: web.Request) -> web.Response:
    view = await request.app[CITIZENS].current_pass(await _limited_citizen(request))
    png = await asyncio.get_running_loop().run_in_executor(
        None, qr.render_png, view.code, view.color
    )
    return web.Response(body=png, content_type="image/png", headers=NO_STORE)


async def get_pass_svg(request: web.Request) -> web.Response:
    view = await request.app[CITIZENS].current_pass(await _limited_citizen(request))
    svg = await asyncio.get_running_loop().run_in_executor(
        None, qr.render_svg, view.code, view.color
    )
    return web.Response(text=svg, content_type="image/svg+xml", headers=NO_STORE)
