"""Reading request bodies: size limit, media type, JSON, schema — each with its own problem."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import fastjsonschema
import orjson
from aiohttp import hdrs, web

from passcode.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from passcode.keys import SETTINGS

Validator = Callable[[Any], Any]


async def read_json(request: web.Request, *, limit: int, validate: Validator) -> Any:
    """The body as validated JSON, never more than ``limit`` bytes read."""
    length = check_body_headers(
        request,
        media_type="application/json",
        spelled="application/json",
        kind="JSON bodies",
        limit=limit,
    )
    if length is not None and request.content.is_eof():
        # All of it arrived with the headers: taken from the buffer, nothing to wait for
        # (``request.read()`` would copy it through a loop of awaits).
        raw = request.content.read_nowait()
    else:
        async with body_deadline(request):
            raw = await request.read() if length is not None else await read_limited(request, limit)
    data = _parse(raw)
    try:
        validate(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValidationFailed(exc.message, errors=[exc.message]) from exc
    return data


@asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Reading the body inside this gets PASSCODE_BODY_TIMEOUT, else a 408: a client that
    sends part of a body and stalls must not hold a handler (and its buffer) forever.

    Not used when the whole body is already buffered (a small one arrives with its headers):
    a deadline costs a timer and a task lookup, a tenth of a verify's CPU.
    """
    timeout = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError as exc:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from exc


def check_body_headers(
    request: web.Request, *, media_type: str, spelled: str, kind: str, limit: int
) -> int | None:
    """The media type (415, naming ``spelled``), a UTF-8 charset if one is given (415 for
    ``kind``) and a declared length within ``limit`` (413); returns the declared length."""
    if request.content_type != media_type:
        given = request.content_type if hdrs.CONTENT_TYPE in request.headers else "absent"
        raise UnsupportedMediaType(f"Content-Type must be {spelled}, not {given}")
    charset = request.charset
    if charset is not None and charset.lower() not in {"utf-8", "utf8"}:
        raise UnsupportedMediaType(f"{kind} must be UTF-8")
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit here is {limit}", limit=limit)
    return length


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body from the stream, read no further than one byte past ``limit`` (then 413)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
    return b"".join(chunks)


def _parse(raw: bytes) -> Any:
    """Strict RFC 8259 (orjson): UTF-8 only (no BOM, no UTF-16/32 sniffing), finite numbers only
    (no NaN, Infinity or 1e400), no lone surrogates, nesting at most 1024 deep; each a 400."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


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
