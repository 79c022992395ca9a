"""The audit log for auditors: who did what, when, and how many rows it touched or returned."""

from __future__ import annotations

import re

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check
from passcode.api.params import query_int, query_time
from passcode.api.responses import json_response, rfc3339
from passcode.domain import fields
from passcode.errors import ValidationFailed
from passcode.keys import POOL, SETTINGS
from passcode.service.auditlog import read_audit_log

_ACTION = re.compile(r"[a-z_]{1,40}(\.[a-z_]{1,40})?")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


async def get_audit(request: web.Request) -> web.Response:
    """Entries in ``[since, until)`` (default: the last 7 days), oldest first, ``limit`` at a
    time; ``next_cursor`` continues. Reading the log is itself recorded."""
    actor = actor_of(request)
    until = query_time(request, "until")
    since = query_time(request, "since")
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    cursor = query_int(request, "cursor", default=0, low=0, high=2**62)
    who = request.query.get("actor")
    if who is not None:
        who = check(fields.actor, who, "actor")
    action = request.query.get("action")
    if action is not None and not _ACTION.fullmatch(action):
        raise ValidationFailed("action must look like terminal.add", errors=["action"])
    settings = request.app[SETTINGS]
    page = await read_audit_log(
        request.app[POOL],
        reader=actor.name,
        since=since,
        until=until,
        actor=who,
        action=action,
        cursor=cursor,
        limit=limit,
        clock=settings.clock,
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
            for e in page.entries
        ],
        "next_cursor": page.next_cursor,
    }
    return json_response(body)
