"""Authority API: overrides, terminals and replay counts, each behind its role and audited."""

from __future__ import annotations

import uuid

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, parse_datetime, read_json
from passcode.api.params import query_time
from passcode.api.responses import json_response, rfc3339, status_body
from passcode.api.schemas import (
    OVERRIDE_REQUEST,
    TERMINAL_REQUEST,
    compile_schema,
)
from passcode.domain import fields
from passcode.domain.model import Color, StatusReason
from passcode.errors import NotFound
from passcode.keys import CACHE, POOL, SEALER, SETTINGS, TERMINALS
from passcode.service.authority import override_status
from passcode.service.replays import count_replays
from passcode.service.terminals import register_terminal, revoke_terminal

_validate_override = compile_schema(OVERRIDE_REQUEST)
_validate_terminal = compile_schema(TERMINAL_REQUEST)


async def post_override(request: web.Request) -> web.Response:
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_override)
    valid_from = data.get("valid_from")
    valid_until = data.get("valid_until")
    override_id, live = await override_status(
        pool=request.app[POOL],
        cache=request.app[CACHE],
        sealer=request.app[SEALER],
        policy=settings.policy(),
        idp_issuer=settings.idp_issuer,
        user_id=check(fields.user_id, data["user_id"], "user_id"),
        color=Color(data["color"]),
        reason=StatusReason(data["reason"]),
        valid_from=parse_datetime(valid_from, "valid_from") if valid_from else None,
        valid_until=parse_datetime(valid_until, "valid_until") if valid_until else None,
        created_by=actor.name,
        clock=settings.clock,
        timeout=settings.pg_timeout,
    )
    return json_response({"override_id": override_id, "status": status_body(live)}, status=201)


async def post_terminal(request: web.Request) -> web.Response:
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_terminal)
    place = check(fields.place, data["place"], "place")
    created = await register_terminal(
        request.app[POOL], place, actor=actor.name, timeout=settings.pg_timeout
    )
    body = {
        "id": str(created.id),
        "place": created.place,
        "key": created.key,
        "created_at": rfc3339(created.created_at),
    }
    return json_response(body, status=201, headers={"Cache-Control": "no-store"})


async def revoke(request: web.Request) -> web.Response:
    actor = actor_of(request)
    try:
        terminal_id = uuid.UUID(request.match_info["terminal_id"])
    except ValueError as exc:
        raise NotFound("no such terminal") from exc
    found = await revoke_terminal(
        request.app[POOL],
        terminal_id,
        actor=actor.name,
        timeout=request.app[SETTINGS].pg_timeout,
        directory=request.app[TERMINALS],
    )
    if not found:
        raise NotFound("no such terminal")
    return web.Response(status=204)


async def get_replays(request: web.Request) -> web.Response:
    """Scans flagged as replays (one pass at two places within the replay window) in
    ``[since, until)``: the count and the top places. Defaults: the last 24 hours."""
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    found = await count_replays(
        request.app[POOL],
        actor=actor.name,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        clock=settings.clock,
        timeout=settings.pg_timeout,
    )
    body = {
        "since": rfc3339(found.since),
        "until": rfc3339(found.until),
        "replays": found.total,
        "by_place": [{"place": place, "replays": n} for place, n in found.by_place],
    }
    return json_response(body)
