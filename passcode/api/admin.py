"""Authority API: overrides and terminals, behind the admin credential."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from passcode.api.auth import require_admin
from passcode.api.body import parse_datetime, read_json
from passcode.api.citizen import status_body
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import (
    DATETIME_PATTERN,
    OVERRIDE_REQUEST,
    TERMINAL_REQUEST,
    compile_schema,
)
from passcode.domain.model import Color, StatusReason
from passcode.errors import NotFound, ValidationFailed
from passcode.keys import CACHE, POOL, SEALER, SETTINGS, TERMINALS, VERIFIER
from passcode.service.authority import override_status
from passcode.store.scans import count_replays
from passcode.store.terminals import add_terminal, revoke_terminal

_validate_override = compile_schema(OVERRIDE_REQUEST)
_validate_terminal = compile_schema(TERMINAL_REQUEST)


async def post_override(request: web.Request) -> web.Response:
    actor = require_admin(request)
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
        user_id=data["user_id"],
        color=Color(data["color"]),
        reason=StatusReason(data["reason"]),
        valid_from=parse_datetime(valid_from, "valid_from") if valid_from else None,
        valid_until=parse_datetime(valid_until, "valid_until") if valid_until else None,
        created_by=actor,
        timeout=settings.pg_timeout,
    )
    return json_response({"override_id": override_id, "status": status_body(live)}, status=201)


async def post_terminal(request: web.Request) -> web.Response:
    require_admin(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_terminal)
    created = await add_terminal(
        request.app[POOL], data["place"].strip(), timeout=settings.pg_timeout
    )
    body = {
        "id": str(created.id),
        "place": created.place,
        "key": created.key,
        "created_at": rfc3339(created.created_at),
    }
    return json_response(body, status=201, headers={"Cache-Control": "no-store"})


async def revoke(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        terminal_id = uuid.UUID(request.match_info["terminal_id"])
    except ValueError as exc:
        raise NotFound("no such terminal") from exc
    found = await revoke_terminal(
        request.app[POOL], terminal_id, timeout=request.app[SETTINGS].pg_timeout
    )
    if not found:
        raise NotFound("no such terminal")
    request.app[TERMINALS].forget(terminal_id)
    return web.Response(status=204)


_DATETIME = re.compile(DATETIME_PATTERN)
REPLAY_DEFAULT_WINDOW = timedelta(hours=24)
REPLAY_MAX_WINDOW = timedelta(days=31)


def _query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if len(raw) > 40 or not _DATETIME.match(raw):
        raise ValidationFailed(f"{name} must be an RFC 3339 time with an offset", errors=[name])
    return parse_datetime(raw, name)


async def get_replays(request: web.Request) -> web.Response:
    """Scans flagged as replays (one pass at two places within the replay window) in
    ``[since, until)``: the count and the top places. Defaults: the last 24 hours."""
    require_admin(request)
    since = _query_time(request, "since")
    until = _query_time(request, "until")
    if until is None:
        until = (
            since + REPLAY_DEFAULT_WINDOW
            if since is not None
            else datetime.fromtimestamp(request.app[VERIFIER].clock.now(), UTC)
        )
    if since is None:
        since = until - REPLAY_DEFAULT_WINDOW
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    if until - since > REPLAY_MAX_WINDOW:
        raise ValidationFailed("the window is at most 31 days", errors=["since", "until"])
    total, by_place = await count_replays(
        request.app[POOL], since=since, until=until, timeout=request.app[SETTINGS].pg_timeout
    )
    body = {
        "since": rfc3339(since),
        "until": rfc3339(until),
        "replays": total,
        "by_place": [{"place": place, "replays": n} for place, n in by_place],
    }
    return json_response(body)
