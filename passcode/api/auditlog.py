"""The audit log for auditors: who did what, when, and how many rows it touched or returned."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from passcode.api.auth import authorize
from passcode.api.body import check, parse_datetime
from passcode.api.responses import json_response, rfc3339
from passcode.domain import fields
from passcode.domain.model import Role
from passcode.errors import ValidationFailed
from passcode.keys import POOL, SETTINGS
from passcode.store import audit

_ACTION = re.compile(r"[a-z_]{1,40}(\.[a-z_]{1,40})?")
DEFAULT_WINDOW = timedelta(days=7)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def query_time(request: web.Request, name: str) -> datetime | None:
    """An optional time query parameter (the rule of every time field), or a 400 naming it."""
    raw = request.query.get(name)
    if raw is None:
        return None
    return parse_datetime(raw, name)


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within ``[low, high]``, or a 400 naming it."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise ValidationFailed(f"{name} must be an integer from {low} to {high}", errors=[name])
    return int(raw)


async def get_audit(request: web.Request) -> web.Response:
    """Entries in ``[since, until)`` (default: the last 7 days), oldest first, ``limit`` at a
    time; ``next_cursor`` continues. Reading the log is itself recorded."""
    actor = await authorize(request, Role.AUDITOR, action="audit.read")
    until = query_time(request, "until") or datetime.now(UTC)
    since = query_time(request, "since") or until - DEFAULT_WINDOW
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    cursor = query_int(request, "cursor", default=0, low=0, high=2**62)
    who = request.query.get("actor")
    if who is not None:
        who = check(fields.actor, who, "actor")
    action = request.query.get("action")
    if action is not None and not _ACTION.fullmatch(action):
        raise ValidationFailed("action must look like terminal.add", errors=["action"])
    settings = request.app[SETTINGS]
    entries = await audit.read(
        request.app[POOL],
        since=since,
        until=until,
        actor=who,
        action=action,
        after_id=cursor,
        limit=limit,
        timeout=settings.pg_timeout,
    )
    await audit.record(
        request.app[POOL],
        actor=actor.name,
        action="audit.read",
        target={"since": rfc3339(since), "until": rfc3339(until), "cursor": cursor},
        rows=len(entries),
        timeout=settings.pg_timeout,
    )
    body = {
        "entries": [
            {
                "id": e.id,
                "at": rfc3339(e.at),
                "actor": e.actor,
                "action": e.action,
                "outcome": e.outcome,
                "target": e.target,
                "rows": e.rows,
            }
            for e in entries
        ],
        "next_cursor": entries[-1].id if len(entries) == limit else None,
    }
    return json_response(body)
