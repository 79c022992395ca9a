"""Risk places (时空伴随): mark a place risky for a window, and follow the job that applies it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, parse_datetime, read_json
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import RISK_PLACE_REQUEST, compile_schema
from passcode.domain import fields
from passcode.domain.model import Color
from passcode.errors import NotFound
from passcode.keys import POOL, RISK_PLACES, SETTINGS
from passcode.service.markings import Marking, mark_risk_place, read_marking

_validate = compile_schema(RISK_PLACE_REQUEST)
PATH = "/v1/admin/risk-places"


def marking_body(marking: Marking) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return None if moment is None else rfc3339(moment)

    return {
        "id": str(marking.id),
        "place": marking.place,
        "since": rfc3339(marking.since),
        "until": rfc3339(marking.until),
        "color": marking.color.value,
        "note": marking.note,
        "exposure_until": when(marking.exposure_until),
        "created_by": marking.created_by,
        "created_at": rfc3339(marking.created_at),
        "state": marking.state,
        "affected": marking.affected,
        "processed": marking.processed,
        "started_at": when(marking.started_at),
        "finished_at": when(marking.finished_at),
        "error": marking.error,
        "links": {"self": f"{PATH}/{marking.id}"},
    }


async def post_risk_place(request: web.Request) -> web.Response:
    """Mark a place: 202 and the job starts; the same (place, window, colour) again: 200 and
    the marking made before, with no new work (its note and exposure end are the first's),
    unless it failed: then it runs again. Audited in the marking's transaction."""
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate)
    place = check(fields.place, data["place"], "place")
    note = check(fields.note, data["note"], "note")
    since = parse_datetime(data["since"], "since")
    until = parse_datetime(data["until"], "until")
    raw_end = data.get("exposure_until")
    marking, created = await mark_risk_place(
        request.app[POOL],
        actor=actor.name,
        place=place,
        since=since,
        until=until,
        color=Color(data.get("color", Color.YELLOW.value)),
        note=note,
        exposure_until=parse_datetime(raw_end, "exposure_until") if raw_end is not None else None,
        retention_days=settings.scan_retention_days,
        clock_skew=settings.clock_skew,
        clock=settings.clock,
        start=request.app[RISK_PLACES].start,
        timeout=settings.pg_timeout,
    )
    if not created:
        return json_response(marking_body(marking))
    return json_response(
        marking_body(marking), status=202, headers={"Location": f"{PATH}/{marking.id}"}
    )


async def get_risk_place(request: web.Request) -> web.Response:
    """A marking and its job's progress."""
    actor = actor_of(request)
    try:
        marking_id = uuid.UUID(request.match_info["marking_id"])
    except ValueError as exc:
        raise NotFound("no such risk place marking") from exc
    marking = await read_marking(
        request.app[POOL], marking_id, actor=actor.name, timeout=request.app[SETTINGS].pg_timeout
    )
    return json_response(marking_body(marking))
