"""Printed cards API (纸质码; role community_worker): issue, print again (PNG, SVG sheet),
revoke by serial, and declare for the holder. Thin: parse, call the card service, answer."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, read_json
from passcode.api.citizen import NO_STORE
from passcode.api.responses import json_response, rfc3339, status_body
from passcode.api.schemas import (
    CARD_REQUEST,
    CARD_REVOKE_REQUEST,
    DECLARATION_REQUEST,
    compile_schema,
)
from passcode.domain import cardsheet, fields
from passcode.domain.clock import utc_now
from passcode.domain.rules import Declaration
from passcode.errors import BadRequest, NotFound, ValidationFailed
from passcode.keys import CARDS, SETTINGS
from passcode.service.cards import parse_serial
from passcode.store.cards import StoredCard

_validate_card = compile_schema(CARD_REQUEST)
_validate_revoke = compile_schema(CARD_REVOKE_REQUEST)
_validate_declaration = compile_schema(DECLARATION_REQUEST)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def _serial(request: web.Request) -> bytes:
    try:
        return parse_serial(request.match_info["serial"])
    except ValueError as exc:
        raise NotFound("no such card") from exc


def _urls(serial: bytes) -> dict[str, str]:
    base = f"/v1/admin/cards/{serial.hex()}"
    return {"png_url": f"{base}/card.png", "sheet_url": f"{base}/sheet.svg"}


def _card_body(card: StoredCard) -> dict[str, Any]:
    return {
        "serial": card.serial.hex(),
        "holder": {"name": card.holder},
        "issued_at": rfc3339(card.issued_at),
        "expires_at": rfc3339(card.expires_at),
        "revoked_at": rfc3339(card.revoked_at) if card.revoked_at is not None else None,
        **_urls(card.serial),
    }


async def post_card(request: web.Request) -> web.Response:
    actor = actor_of(request)
    data = await read_json(request, limit=request.app[SETTINGS].max_body, validate=_validate_card)
    issued = await request.app[CARDS].issue(
        user_id=check(fields.user_id, data["user_id"], "user_id"),
        name=check(lambda v: fields.line(v, max_length=100), data["name"], "name"),
        days=data.get("days"),
        actor=actor.name,
    )
    png = await asyncio.get_running_loop().run_in_executor(
        None, cardsheet.render_card_png, issued.code
    )
    body = {
        "serial": issued.serial.hex(),
        "code": issued.code,
        "holder": {"name": issued.holder},
        "issued_at": rfc3339(issued.issued_at),
        "expires_at": rfc3339(issued.expires_at),
        "revoked_at": None,
        **_urls(issued.serial),
        "png_base64": base64.b64encode(png).decode("ascii"),
    }
    return json_response(body, status=201, headers=NO_STORE)


async def get_card_png(request: web.Request) -> web.Response:
    card = await request.app[CARDS].card(_serial(request))
    png = await asyncio.get_running_loop().run_in_executor(
        None, cardsheet.render_card_png, card.code
    )
    return web.Response(body=png, content_type="image/png", headers=NO_STORE)


async def get_card_sheet(request: web.Request) -> web.Response:
    card = await request.app[CARDS].card(_serial(request))
    svg = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: cardsheet.render_sheet_svg(
            card.code,
            holder=card.holder,
            serial=card.serial,
            issued_at=card.issued_at,
            expires_at=card.expires_at,
        ),
    )
    return web.Response(text=svg, content_type="image/svg+xml", headers=NO_STORE)


async def revoke_card(request: web.Request) -> web.Response:
    actor = actor_of(request)
    serial = _serial(request)
    data = await read_json(request, limit=request.app[SETTINGS].max_body, validate=_validate_revoke)
    card, _ = await request.app[CARDS].revoke(serial, reason=data["reason"], actor=actor.name)
    return json_response(_card_body(card))


async def declare_for_holder(request: web.Request) -> web.Response:
    actor = actor_of(request)
    serial = _serial(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1-128 printable ASCII characters")
    data = await read_json(
        request, limit=request.app[SETTINGS].max_body, validate=_validate_declaration
    )
    service = request.app[CARDS]
    try:
        declaration = Declaration.from_body(data, declared_at=utc_now(service.clock))
    except fields.FieldError as exc:  # the schema checked the rest: only a region can fail
        raise ValidationFailed(f"regions_visited {exc}", errors=["regions_visited"]) from exc
    stored, live = await service.declare(
        serial, declaration, idempotency_key=key, body=data, actor=actor.name
    )
    body = {
        "declaration_id": stored.id,
        "declared_at": rfc3339(stored.declared_at),
        "status": status_body(live),
    }
    headers = dict(NO_STORE)
    if not stored.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status=201, headers=headers)
