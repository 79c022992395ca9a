"""Query parameters the admin handlers share: optional times and bounded integers."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from passcode.api.body import parse_datetime
from passcode.errors import ValidationFailed


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
