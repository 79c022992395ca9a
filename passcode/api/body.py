"""Reading request bodies: size limit, media type, JSON, schema — each with its own problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import fastjsonschema
import orjson
from aiohttp import hdrs, web

from passcode.domain import fields
from passcode.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from passcode.keys import SETTINGS

Validator = Callable[[Any], Any]
_dumps = orjson.dumps
T = TypeVar("T")


async def read_json(
    request: web.Request, *, limit: int, validate: Validator, stream: bool = False
) -> Any:
    """The body as validated JSON, never more than ``limit`` bytes read; ``stream`` reads it
    from the stream (a ``limit`` above the application's ``client_max_size``, which
    ``request.read()`` enforces)."""
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
            raw = (
                await request.read()
                if length is not None and not stream
                else await read_limited(request, limit)
            )
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
    """No content coding (415), the media type (415, naming ``spelled``), a UTF-8 charset if
    one is given (415 for ``kind``) and a declared length within ``limit`` (413); returns the
    declared length.

    A compressed body is refused before any of it is read: aiohttp would inflate it while it
    is read, so ``limit`` (checked on the bytes sent) would not bound what is parsed.
    """
    coding = request.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and coding.strip().lower() not in {"", "identity"}:
        error = UnsupportedMediaType(
            "Content-Encoding must be identity: send the body uncompressed"
        )
        error.headers["Accept-Encoding"] = "identity"
        raise error
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
    (no NaN, Infinity or 1e400), no lone surrogates, nesting at most 1024 deep, and no object
    with the same key twice (orjson would keep the last, while a proxy or inspector in front
    may read the first); each a 400."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if _has_duplicate_keys(raw, data):
        raise BadRequest("body is not valid JSON here: an object has the same key twice")
    return data


def _has_duplicate_keys(raw: bytes, data: Any) -> bool:
    """Whether the JSON text ``raw`` (which parsed as ``data``) repeats a key in an object.

    ``data`` keeps one member per distinct key, and orjson writes it back compactly with each
    member once. If that is ``raw`` itself, nothing was repeated (a compact body: one
    comparison). Otherwise count colons: outside strings a colon only ever separates a key
    from its value, and inside them only a ``\\u`` escape (``\\u003a``) can stand for one, so
    without such an escape ``raw`` holds (members written + colons in strings) colons and the
    rewrite (members kept + the same colons in strings): equal exactly when no key was
    repeated. With a ``\\u`` escape the exact, slower check runs. Cost on verify's usual body
    (400 bytes, ``{"code": "PC1:…"}``): 0.13 µs compact, 0.59 µs as ``json.dumps`` writes it.
    """
    try:
        rewritten = _dumps(data)
    except TypeError:  # nested deeper than orjson writes (255 levels; it reads 1024)
        return _repeats_a_key(raw)
    if rewritten == raw:
        return False
    if raw.find(b"\\") >= 0 and b"\\u" in raw:  # find: memchr, three times faster than ``in``
        return _repeats_a_key(raw)
    return raw.count(b":") != rewritten.count(b":")


class _RepeatedKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _RepeatedKey
    return members


def _repeats_a_key(raw: bytes) -> bool:
    """The exact check: parse again, looking at every object's members in order."""
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _RepeatedKey:
        return True
    except RecursionError as exc:  # orjson nests to 1024, this parser to about 990
        raise BadRequest("body is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    return False


def parse_datetime(value: str, field: str) -> datetime:
    """An RFC 3339 time with an offset, in UTC, within the range every time must keep
    (:func:`passcode.domain.fields.parse_time`); else a 400 naming ``field``."""
    return check(fields.parse_time, value, field)


def check(rule: Callable[[str], T], value: str, field: str) -> T:
    """``rule(value)`` (a rule of :mod:`passcode.domain.fields`), or a 400 naming ``field``."""
    try:
        return rule(value)
    except fields.FieldError as exc:
        raise ValidationFailed(f"{field} {exc}", errors=[field]) from exc


def bearer(request: web.Request) -> str | None:
    """The credential from ``Authorization: Bearer …``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
