"""Reading request bodies: size limit, media type, JSON, schema — each with its own problem."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import fastjsonschema
from aiohttp import hdrs, web

from passcode.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

Validator = Callable[[Any], Any]


async def read_json(request: web.Request, *, limit: int, validate: Validator) -> Any:
    """The body as validated JSON, never more than ``limit`` bytes read."""
    if request.content_type != "application/json":
        given = request.content_type if hdrs.CONTENT_TYPE in request.headers else "absent"
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {given}")
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
    data = _parse(b"".join(chunks))
    try:
        validate(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValidationFailed(exc.message, errors=[exc.message]) from exc
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)

# A \uD800-\uDFFF escape: the only way a lone surrogate gets past strict UTF-8 decoding.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse(raw: bytes) -> Any:
    """Strict RFC 8259: UTF-8 only (no BOM, no UTF-16/32 sniffing), finite numbers only (no NaN,
    Infinity or 1e400), no lone surrogates; excessive nesting is a 400, not a RecursionError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = _DECODER.decode(text)
    except RecursionError as exc:
        raise BadRequest("body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("body is not valid JSON: a string holds a lone surrogate") from exc
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
