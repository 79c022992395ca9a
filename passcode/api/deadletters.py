"""Dead letters of the scan log for operators: list them, replay them; both audited."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.params import query_int
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import DEAD_LETTERS_PAGE_MAX
from passcode.keys import POOL, SETTINGS
from passcode.service.deadletters import KeptLetter, list_dead_letters, replay_dead_letters

MAX_LIMIT, DEFAULT_LIMIT = DEAD_LETTERS_PAGE_MAX, 100
REPLAY_MAX, REPLAY_DEFAULT = 100_000, 10_000


def letter_body(kept: KeptLetter) -> dict[str, Any]:
    return {
        "id": kept.id,
        "stream": kept.letter.stream,
        "entry_id": kept.letter.entry_id,
        "fields": [part.decode("utf-8", "backslashreplace") for part in kept.letter.fields],
        "reason": kept.letter.reason,
        "first_seen": rfc3339(kept.first_seen),
        "last_tried": rfc3339(kept.last_tried) if kept.last_tried else None,
    }


async def get_dead_letters(request: web.Request) -> web.Response:
    """Scan entries the drain could not store, oldest first, ``limit`` at a time."""
    actor = actor_of(request)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    cursor = query_int(request, "cursor", default=0, low=0, high=2**62)
    settings = request.app[SETTINGS]
    page = await list_dead_letters(
        request.app[POOL],
        actor=actor.name,
        after_id=cursor,
        limit=limit,
        timeout=settings.pg_timeout,
    )
    body = {
        "total": page.total,
        "entries": [letter_body(kept) for kept in page.letters],
        "next_cursor": page.letters[-1].id if len(page.letters) == limit else None,
    }
    return json_response(body)


async def post_replay(request: web.Request) -> web.Response:
    """Store the oldest ``limit`` dead letters that can be stored now; report the counts."""
    actor = actor_of(request)
    limit = query_int(request, "limit", default=REPLAY_DEFAULT, low=1, high=REPLAY_MAX)
    settings = request.app[SETTINGS]
    report = await replay_dead_letters(
        request.app[POOL],
        actor=actor.name,
        limit=limit,
        dedupe_window=settings.scan_dedupe_ttl,
        timeout=settings.pg_timeout,
    )
    body = {"replayed": report.replayed, "failed": report.failed, "remaining": report.remaining}
    return json_response(body)
