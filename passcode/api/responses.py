"""JSON responses and the wire form of times."""

from __future__ import annotations

import calendar
import functools
import math
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web


def rfc3339(moment: datetime | int | float) -> str:
    """UTC, milliseconds truncated, ``Z``: ``2026-11-23T08:00:00.123Z`` (on every verify answer)."""
    if isinstance(moment, datetime):
        utc = moment.astimezone(UTC)
        return f"{_second(calendar.timegm(utc.timetuple()))}.{utc.microsecond // 1000:03d}Z"
    millis = math.floor(moment * 1000)
    return f"{_second(millis // 1000)}.{millis % 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """Formatting the same second for thousands of answers once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


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
