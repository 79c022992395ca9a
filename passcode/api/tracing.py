"""Contact tracing for health officers: who scanned at a place, where a citizen scanned.

The use cases (audit, window, cursors) are :mod:`passcode.service.tracing`'s. The citizen's
user id travels in a POST body, never in a URL, so no access log or proxy ever holds it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, parse_datetime, read_json
from passcode.api.params import query_int, query_time
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import TRACE_CITIZEN_REQUEST, compile_schema
from passcode.domain import fields
from passcode.errors import ValidationFailed
from passcode.keys import POOL, SEALER, SETTINGS
from passcode.service import tracing
from passcode.service.tracing import PlaceHit, SubjectScan

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NO_STORE = {"Cache-Control": "no-store"}

_validate_citizen = compile_schema(TRACE_CITIZEN_REQUEST)


def _place_entry(hit: PlaceHit) -> dict[str, Any]:
    scan = hit.scan
    subject = None
    if scan.subject_id is not None:
        subject = {
            "subject_id": scan.subject_id.hex(),
            "user_id": hit.user_id,
            "name": scan.name_masked,
        }
    return {
        "scanned_at": rfc3339(scan.scanned_at),
        "scan_id": str(scan.scan_id),
        "terminal_id": str(scan.terminal_id),
        "decision": scan.decision,
        "color": scan.color,
        "subject": subject,
    }


def _citizen_entry(scan: SubjectScan) -> dict[str, Any]:
    return {
        "place": scan.place,
        "scanned_at": rfc3339(scan.scanned_at),
        "scan_id": str(scan.scan_id),
        "terminal_id": str(scan.terminal_id),
        "decision": scan.decision,
        "color": scan.color,
    }


async def trace_place(request: web.Request) -> web.Response:
    """Scans at ``place`` in ``[since, until)``, oldest first, with who was scanned."""
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    raw_place = request.query.get("place")
    if raw_place is None:
        raise ValidationFailed("place is required", errors=["place"])
    page = await tracing.trace_place(
        request.app[POOL],
        request.app[SEALER],
        actor=actor.name,
        place=check(fields.place, raw_place, "place"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        cursor=request.query.get("cursor"),
        limit=query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT),
        retention_days=settings.scan_retention_days,
        timeout=settings.pg_timeout,
    )
    body = {"entries": [_place_entry(hit) for hit in page.entries], "next_cursor": page.next_cursor}
    return json_response(body, headers=NO_STORE)


async def trace_citizen(request: web.Request) -> web.Response:
    """A citizen's scans in ``[since, until)``, oldest first. The audit log names the subject
    by its pseudonymous id, never by the user id; an unknown user gets an empty page."""
    actor = actor_of(request)
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_citizen)
    page = await tracing.trace_citizen(
        request.app[POOL],
        request.app[SEALER],
        actor=actor.name,
        idp_issuer=settings.idp_issuer,
        user_id=check(fields.user_id, data["user_id"], "user_id"),
        since=parse_datetime(data["since"], "since"),
        until=parse_datetime(data["until"], "until"),
        cursor=data.get("cursor"),
        limit=int(data.get("limit", DEFAULT_LIMIT)),
        retention_days=settings.scan_retention_days,
        timeout=settings.pg_timeout,
    )
    body = {"entries": [_citizen_entry(s) for s in page.entries], "next_cursor": page.next_cursor}
    return json_response(body, headers=NO_STORE)
