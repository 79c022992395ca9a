"""Reading request bodies: size limit, media type, JSON, schema — each with its own problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import fastjsonschema
from aiohttp import web

from passcode.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

Validator = Callable[[Any], Any]


async def read_json(request: web.Request, *, limit: int, validate: Validator) -> Any:
    """The body as validated JSON, never more than ``limit`` bytes read."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type or 'absent'}"
        )
    charset = request.charset
    if charset is not None and charset.lower() not in {"utf-8", "utf8"}:
        raise UnsupportedMediaType("JSON bodies must be UTF-8")
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit here is {limit}", limit=limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
    try:
        data = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    try:
        validate(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValidationFailed(exc.message, errors=[exc.message]) from exc
    return data


def parse_datetime(value: str, field: str) -> datetime:
    """An RFC 3339 timestamp (already pattern-checked) as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise ValidationFailed(f"{field} is not a valid RFC 3339 time", errors=[field]) from exc
    if parsed.tzinfo is None:
        raise ValidationFailed(f"{field} needs a UTC offset", errors=[field])
    return parsed


def bearer(request: web.Request) -> str | None:
    """The credential from ``Authorization: Bearer …``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
