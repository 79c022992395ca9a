"""Contact tracing for health officers: who scanned at a place, where a citizen scanned.

Each query is recorded in the audit log with how many rows it returned, and only then answered.
Pages are keyset-paginated by an opaque cursor. The citizen's user id travels in a POST body,
never in a URL, so no access log or proxy ever holds it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag

from passcode.api.auditlog import query_int, query_time
from passcode.api.auth import authorize
from passcode.api.body import check, parse_datetime, read_json
from passcode.api.responses import json_response, rfc3339
from passcode.api.schemas import TRACE_CITIZEN_REQUEST, compile_schema
from passcode.config import Settings
from passcode.domain import fields
from passcode.domain.model import Role
from passcode.domain.privacy import Sealer
from passcode.errors import ValidationFailed
from passcode.keys import POOL, SEALER, SETTINGS
from passcode.store import audit
from passcode.store.statuses import find_subject
from passcode.store.tracing import (
    PlaceScan,
    Position,
    SubjectScan,
    scans_at_place,
    scans_of_subject,
)

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NO_STORE = {"Cache-Control": "no-store"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,100}")
_CURSOR_BODY = re.compile(r"(-?[0-9]{1,19})\.([0-9a-f]{32})")
_validate_citizen = compile_schema(TRACE_CITIZEN_REQUEST)


def encode_cursor(scan: PlaceScan | SubjectScan) -> str:
    """The position past ``scan``: its time in microseconds and its id, base64url."""
    micros = (scan.scanned_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{scan.scan_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> Position:
    """A cursor :func:`encode_cursor` made, or a 400."""
    try:
        if not _CURSOR_TEXT.fullmatch(text):
            raise ValueError(text)
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        found = _CURSOR_BODY.fullmatch(raw)
        if found is None:
            raise ValueError(raw)
        at = _EPOCH + timedelta(microseconds=int(found.group(1)))
        return Position(at, uuid.UUID(hex=found.group(2)))
    except (ValueError, binascii.Error, OverflowError) as exc:  # UnicodeDecodeError included
        raise ValidationFailed(
            "cursor is not a next_cursor this API gave", errors=["cursor"]
        ) from exc


def _window(
    since: datetime | None, until: datetime | None, settings: Settings
) -> tuple[datetime, datetime]:
    """``[since, until)``: both given, in order, and no longer than the retention period (the
    scan log holds no more than that anyway)."""
    if since is None or until is None:
        name = "since" if since is None else "until"
        raise ValidationFailed(f"{name} is required (RFC 3339 with an offset)", errors=[name])
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    days = settings.scan_retention_days
    if until - since > timedelta(days=days):
        raise ValidationFailed(
            f"the window is at most {days} days (the scan retention period)",
            errors=["since", "until"],
        )
    return since, until


def _user_id(sealer: Sealer, sealed: bytes | None) -> str | None:
    if sealed is None:
        return None
    try:
        return sealer.open(sealed)
    except InvalidTag:  # sealed under another server secret: say so, answer the rest
        log.warning("a sealed user id could not be opened (server secret changed?)")
        return None


def _place_entry(scan: PlaceScan, sealer: Sealer) -> dict[str, Any]:
    subject = None
    if scan.subject_id is not None:
        subject = {
            "subject_id": scan.subject_id.hex(),
            "user_id": _user_id(sealer, scan.user_id_enc),
            "name": scan.name_masked,
        }
    return {
        "scanned_at": rfc3339(scan.scanned_at),
        "scan_id": str(scan.scan_id),
        "terminal_id": str(scan.terminal_id),
        "decision": scan.decision,
        "color": scan.color,
        "subject": subject,
    }


def _citizen_entry(scan: SubjectScan) -> dict[str, Any]:
    return {
        "place": scan.place,
        "scanned_at": rfc3339(scan.scanned_at),
        "scan_id": str(scan.scan_id),
        "terminal_id": str(scan.terminal_id),
        "decision": scan.decision,
        "color": scan.color,
    }


def _next_cursor(found: list[PlaceScan] | list[SubjectScan], limit: int) -> str | None:
    return encode_cursor(found[-1]) if len(found) == limit else None


async def trace_place(request: web.Request) -> web.Response:
    """Scans at ``place`` in ``[since, until)``, oldest first, with who was scanned."""
    actor = await authorize(request, Role.HEALTH_OFFICER, action="trace.place")
    settings = request.app[SETTINGS]
    raw_place = request.query.get("place")
    if raw_place is None:
        raise ValidationFailed("place is required", errors=["place"])
    place = check(fields.place, raw_place, "place")
    since, until = _window(query_time(request, "since"), query_time(request, "until"), settings)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    cursor = request.query.get("cursor")
    found = await scans_at_place(
        request.app[POOL],
        place=place,
        since=since,
        until=until,
        after=decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
        timeout=settings.pg_timeout,
    )
    await audit.record(
        request.app[POOL],
        actor=actor.name,
        action="trace.place",
        target={"place": place, "since": rfc3339(since), "until": rfc3339(until)},
        rows=len(found),
        timeout=settings.pg_timeout,
    )
    sealer = request.app[SEALER]
    body = {
        "entries": [_place_entry(scan, sealer) for scan in found],
        "next_cursor": _next_cursor(found, limit),
    }
    return json_response(body, headers=NO_STORE)


async def trace_citizen(request: web.Request) -> web.Response:
    """A citizen's scans in ``[since, until)``, oldest first. The audit log names the subject
    by its pseudonymous id, never by the user id; an unknown user gets an empty page."""
    actor = await authorize(request, Role.HEALTH_OFFICER, action="trace.citizen")
    settings = request.app[SETTINGS]
    data = await read_json(request, limit=settings.max_body, validate=_validate_citizen)
    since, until = _window(
        parse_datetime(data["since"], "since"), parse_datetime(data["until"], "until"), settings
    )
    limit = int(data.get("limit", DEFAULT_LIMIT))
    after = decode_cursor(data["cursor"]) if "cursor" in data else None
    pool = request.app[POOL]
    user_id = check(fields.user_id, data["user_id"], "user_id")
    user_hash = request.app[SEALER].user_hash(settings.idp_issuer, user_id)
    subject = await find_subject(pool, user_hash, timeout=settings.pg_timeout)
    found: list[SubjectScan] = []
    if subject is not None:
        found = await scans_of_subject(
            pool,
            subject_id=subject,
            since=since,
            until=until,
            after=after,
            limit=limit,
            timeout=settings.pg_timeout,
        )
    await audit.record(
        pool,
        actor=actor.name,
        action="trace.citizen",
        target={
            "subject": subject.hex() if subject is not None else None,
            "since": rfc3339(since),
            "until": rfc3339(until),
        },
        rows=len(found),
        timeout=settings.pg_timeout,
    )
    body = {
        "entries": [_citizen_entry(s) for s in found],
        "next_cursor": _next_cursor(found, limit),
    }
    return json_response(body, headers=NO_STORE)
