"""JSON responses and the wire form of times."""

from __future__ import annotations

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
        return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
    seconds = math.floor(moment)
    millis = int((moment - seconds) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
