"""Contact tracing use cases: who scanned at a place, where a citizen scanned.

Each query is recorded in the audit log with how many rows it returned, and only then
answered. Pages are keyset-paginated by an opaque cursor (the last scan's time and id); the
window is at most the scan retention period (the scan log holds no more than that anyway).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag

from passcode.domain.fields import rfc3339
from passcode.domain.privacy import Sealer
from passcode.errors import ValidationFailed
from passcode.store import audit
from passcode.store.pg import Pool
from passcode.store.statuses import find_subject
from passcode.store.tracing import (
    PlaceScan,
    Position,
    SubjectScan,
    scans_at_place,
    scans_of_subject,
)

# Re-exported store types appear in the api's signatures; the api imports no store module.
__all__ = [
    "CitizenPage",
    "PlaceHit",
    "PlacePage",
    "PlaceScan",
    "SubjectScan",
    "decode_cursor",
    "encode_cursor",
    "trace_citizen",
    "trace_place",
]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,100}")
_CURSOR_BODY = re.compile(r"(-?[0-9]{1,19})\.([0-9a-f]{32})")


def encode_cursor(scan: PlaceScan | SubjectScan) -> str:
    """The position past ``scan``: its time in microseconds and its id, base64url."""
    micros = (scan.scanned_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{scan.scan_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> Position:
    """A cursor :func:`encode_cursor` made, or a validation error naming ``cursor``."""
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
    since: datetime | None, until: datetime | None, retention_days: int
) -> tuple[datetime, datetime]:
    """``[since, until)``: both given, in order, and no longer than the retention period."""
    if since is None or until is None:
        name = "since" if since is None else "until"
        raise ValidationFailed(f"{name} is required (RFC 3339 with an offset)", errors=[name])
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    if until - since > timedelta(days=retention_days):
        raise ValidationFailed(
            f"the window is at most {retention_days} days (the scan retention period)",
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


@dataclass(frozen=True, slots=True)
class PlaceHit:
    """A scan at the place and, when it named a subject, that citizen's user id (unsealed)."""

    scan: PlaceScan
    user_id: str | None


@dataclass(frozen=True, slots=True)
class PlacePage:
    entries: list[PlaceHit]
    next_cursor: str | None  # past the last entry when the page is full, else None


@dataclass(frozen=True, slots=True)
class CitizenPage:
    entries: list[SubjectScan]
    next_cursor: str | None


def _next_cursor(found: list[PlaceScan] | list[SubjectScan], limit: int) -> str | None:
    return encode_cursor(found[-1]) if len(found) == limit else None


async def trace_place(
    pool: Pool,
    sealer: Sealer,
    *,
    actor: str,
    place: str,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
    retention_days: int,
    timeout: float,
) -> PlacePage:
    """Scans at ``place`` in ``[since, until)``, oldest first, with who was scanned; audited
    (``trace.place``, with the place and window) before it is answered."""
    since, until = _window(since, until, retention_days)
    found = await scans_at_place(
        pool,
        place=place,
        since=since,
        until=until,
        after=decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
        timeout=timeout,
    )
    await audit.record(
        pool,
        actor=actor,
        action="trace.place",
        target={"place": place, "since": rfc3339(since), "until": rfc3339(until)},
        rows=len(found),
        timeout=timeout,
    )
    hits = [PlaceHit(scan, _user_id(sealer, scan.user_id_enc)) for scan in found]
    return PlacePage(hits, _next_cursor(found, limit))


async def trace_citizen(
    pool: Pool,
    sealer: Sealer,
    *,
    actor: str,
    idp_issuer: str,
    user_id: str,
    since: datetime,
    until: datetime,
    cursor: str | None,
    limit: int,
    retention_days: int,
    timeout: float,
) -> CitizenPage:
    """A citizen's scans in ``[since, until)``, oldest first. The audit log names the subject
    by its pseudonymous id, never by the user id; an unknown user gets an empty page."""
    since, until = _window(since, until, retention_days)
    after = decode_cursor(cursor) if cursor is not None else None
    subject = await find_subject(pool, sealer.user_hash(idp_issuer, user_id), timeout=timeout)
    found: list[SubjectScan] = []
    if subject is not None:
        found = await scans_of_subject(
            pool,
            subject_id=subject,
            since=since,
            until=until,
            after=after,
            limit=limit,
            timeout=timeout,
        )
    await audit.record(
        pool,
        actor=actor,
        action="trace.citizen",
        target={
            "subject": subject.hex() if subject is not None else None,
            "since": rfc3339(since),
            "until": rfc3339(until),
        },
        rows=len(found),
        timeout=timeout,
    )
    return CitizenPage(found, _next_cursor(found, limit))
