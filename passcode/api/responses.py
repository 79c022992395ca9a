"""JSON responses and the body shapes several handlers share; times in them are written by
:func:`passcode.domain.fields.rfc3339`."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from passcode.domain.fields import rfc3339
from passcode.domain.status import LiveStatus

__all__ = ["json_response", "rfc3339", "status_body"]  # rfc3339: the handlers import it here


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``body`` as UTF-8 JSON; the header is given whole (aiohttp's content_type/charset
    arguments build it anew for every response, about a microsecond on each verify)."""
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers=_JSON_HEADERS if headers is None else {**_JSON_HEADERS, **headers},
    )


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def status_body(live: LiveStatus) -> dict[str, Any]:
    """A live status as the citizen and admin answers show it."""
    return {
        "color": live.color.value if live.color else None,
        "valid_until": rfc3339(live.valid_until),
        "version": live.version,
    }
