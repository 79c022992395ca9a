"""Venue check-in (场所码, DESIGN §4): posters issued by operators, check-ins by citizens.

A check-in is a scan in the one scan log: recorded as a scan of the place's venue terminal
(:mod:`passcode.store.venues`), with the citizen's live status as its decision, through the
Redis scan stream as verify records a decided scan, or straight into PostgreSQL when Redis
cannot take it. Tracing by place and risk places therefore see check-ins like any scan. The
``checkin_id`` is the scan id: a retry is recorded once.

Nothing is recorded for a code that is not genuine (400), of a place or issue this service
does not know (404), or of an older issue or past its expiry (410): each is checked before the
status is read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from passcode.domain import fields
from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.expiring import ExpiringCache
from passcode.domain.identity import Citizen
from passcode.domain.model import Color, Kind, Reason
from passcode.domain.status import LiveStatus
from passcode.domain.venuecode import (
    DAY,
    MAX_DAYS,
    VenueClaims,
    VenueCodeError,
    sign_venue,
    verify_venue,
)
from passcode.domain.verdict import Verdict, judge_live
from passcode.errors import (
    NotFound,
    ServiceUnavailable,
    StoreUnavailable,
    UnknownVenue,
    ValidationFailed,
    VenueCodeInvalid,
    VenueCodeRevoked,
)
from passcode.service.citizen import CitizenService
from passcode.service.signing import KeyringHolder
from passcode.service.verify import LiveCache, ScanIds
from passcode.store import venues
from passcode.store.pg import Pool
from passcode.store.scans import ScanRow, encode_record, insert_scans
from passcode.store.venues import Venue

# A poster issued on one replica revokes the older one on the others within this many seconds
# (each holds the current issue per place that long, so a busy venue costs no query per visitor).
VENUE_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class CheckinOutcome:
    """What the staff at the door look at, and whether this call recorded the scan."""

    color: Color
    reason: Reason
    holder: str  # masked
    place: str
    place_name: str
    checkin_id: str
    server_time: float  # Unix seconds
    recorded: bool  # False: a retry of a check-in already recorded


class VenuePosters:
    """Issue a place's poster (a new venue code, revoking the old one) and read it back."""

    def __init__(
        self,
        *,
        pool: Pool,
        keys: KeyringHolder,
        issuer: str,
        pg_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        on_issue: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.keys = keys
        self.issuer = issuer
        self.pg_timeout = pg_timeout
        self.clock = clock
        # Told the place of every poster issued here (Checkins.forget): this replica refuses
        # the old poster at once, the others within VENUE_CACHE_SECONDS.
        self.on_issue = on_issue

    async def issue(self, place: str, *, actor: str, days: int = MAX_DAYS) -> Venue:
        """A new poster for ``place``: its code lives ``days`` (at most a year, so its key
        verifies it throughout: ``KeyringHolder.card_keys``). Audited (``venue.issue``);
        NotFound for a place no operator created."""
        try:
            place = fields.place(place)
        except fields.FieldError as exc:
            raise ValidationFailed(f"place {exc}", errors=["place"]) from exc
        if not 1 <= days <= MAX_DAYS:
            raise ValidationFailed(f"a venue code lives 1 to {MAX_DAYS} days", errors=["days"])
        now = int(self.clock.now())
        key = self.keys.signer(now)
        expires_at = now + days * DAY

        def make_code(issue: int) -> str:
            claims = VenueClaims(self.issuer, place, issue, now, expires_at)
            return sign_venue(claims, key.private, key.kid)

        venue = await venues.issue_venue(
            self.pool,
            place,
            make_code=make_code,
            issued_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            actor=actor,
            timeout=self.pg_timeout,
        )
        if venue is None:
            raise NotFound(f"no place {place!r}: an operator creates it first")
        if self.on_issue is not None:
            self.on_issue(place)
        return venue

    async def current(self, place: str) -> Venue:
        """The place's current poster; NotFound when it has none (a 400 for no place name)."""
        try:
            place = fields.place(place)
        except fields.FieldError as exc:
            raise ValidationFailed(f"place {exc}", errors=["place"]) from exc
        venue = await venues.find_venue(self.pool, place, timeout=self.pg_timeout)
        if venue is None:
            raise NotFound("this place has no poster yet: POST its poster first")
        return venue


class Checkins:
    """``POST /v1/checkins``: a citizen's phone scanned a venue code."""

    def __init__(
        self,
        *,
        pool: Pool,
        cache: LiveCache,
        citizens: CitizenService,
        keys: KeyringHolder,
        issuer: str,
        leeway: int,
        pg_timeout: float,
        dedupe_window: int,
        clock: Clock = SYSTEM_CLOCK,
        cache_entries: int = 10_000,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.citizens = citizens
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self.pg_timeout = pg_timeout
        self.dedupe_window = dedupe_window
        self.clock = clock
        self._venues: ExpiringCache[str, Venue] = ExpiringCache(cache_entries)
        self._scan_ids = ScanIds()

    def forget(self, place: str) -> None:
        """Drop the cached issue of ``place`` (a poster issued through this process)."""
        self._venues.discard(place)

    def authenticate(self, place_code: str) -> VenueClaims:
        """The claims of a genuine venue code in its window; VenueCodeInvalid (400) for a text
        that is not one, VenueCodeRevoked (410) once it expired."""
        now = int(self.clock.now())
        try:
            return verify_venue(
                place_code,
                self.keys.card_keys(now),
                now=now,
                leeway=self.leeway,
                issuer=self.issuer,
            )
        except VenueCodeError as exc:
            if exc.reason is Reason.EXPIRED:
                raise VenueCodeRevoked(exc.detail, reason=exc.reason.value) from None
            raise VenueCodeInvalid(exc.detail, reason=exc.reason.value) from None

    async def venue_of(self, claims: VenueClaims) -> Venue:
        """The place's current poster if the code is of it; UnknownVenue (404) for a place or
        an issue this service never made, VenueCodeRevoked (410) for an older issue."""
        now = self.clock.now()
        venue = self._venues.get(claims.place, now=now)
        if venue is None or venue.issue < claims.issue:  # a newer issue: ask the database
            venue = await venues.find_venue(self.pool, claims.place, timeout=self.pg_timeout)
            if venue is None:
                raise UnknownVenue("no venue code is in force for this place")
            self._venues.put(claims.place, venue, expires_at=now + VENUE_CACHE_SECONDS, now=now)
        if claims.issue < venue.issue:
            raise VenueCodeRevoked(
                "this poster was replaced by a newer one: scan the poster on display",
                reason=Reason.REVOKED.value,
            )
        if claims.issue != venue.issue or claims.issued_at != int(venue.issued_at.timestamp()):
            raise UnknownVenue("this issue of the place's venue code is not known here")
        return venue

    async def check_in(
        self, citizen: Citizen, place_code: str, checkin_id: uuid.UUID | None
    ) -> CheckinOutcome:
        """Record the citizen's check-in at the code's place (once per ``checkin_id``) and
        answer with their live status. Raises the 400/404/410 above before anything is read
        or recorded; NoDeclaration (404) without a valid declaration; ServiceUnavailable when
        neither Redis nor PostgreSQL takes the scan (never a 200 for a check-in not kept)."""
        claims = self.authenticate(place_code)
        venue = await self.venue_of(claims)
        subject, live = await self.citizens.live_status(citizen)
        assert live.color is not None  # live_status raises NoDeclaration otherwise
        now = self.clock.now()
        sid = str(checkin_id) if checkin_id is not None else self._scan_ids.next(now)
        verdict = judge_live(live.version, live.color, live.version)
        recorded = await self._record(venue, subject, live, verdict, sid, now)
        return CheckinOutcome(
            color=live.color,
            reason=verdict.reason,
            holder=live.holder,
            place=venue.place,
            place_name=venue.name,
            checkin_id=sid,
            server_time=now,
            recorded=recorded,
        )

    async def _record(
        self,
        venue: Venue,
        subject: bytes,
        live: LiveStatus,
        verdict: Verdict,
        sid: str,
        now: float,
    ) -> bool:
        """The scan into the stream (deduplicated by its id there), or straight into PostgreSQL
        (deduplicated within the dedupe window) when Redis cannot take it."""
        record = encode_record(
            scan_id=sid,
            at_ms=int(now * 1000),
            terminal_time=None,
            terminal_id=str(venue.terminal_id),
            subject=subject,
            pass_version=live.version,
            verdict=verdict,
            kind=Kind.PASSCODE,
        )
        try:
            return await self.cache.record(subject, sid, record)
        except StoreUnavailable:
            pass
        row = ScanRow(
            scanned_at=datetime.fromtimestamp(now, UTC),
            scan_id=uuid.UUID(sid),
            terminal_time=None,
            terminal_id=venue.terminal_id,
            place=venue.place,
            subject_id=subject,
            decision=verdict.decision.value,
            reason=verdict.reason.value,
            color=verdict.color.value if verdict.color else None,
        )
        try:
            async with asyncio.timeout(self.pg_timeout):
                stored = await insert_scans(
                    self.pool, [row], timeout=self.pg_timeout, dedupe_window=self.dedupe_window
                )
        except (StoreUnavailable, TimeoutError) as exc:
            raise ServiceUnavailable("the check-in cannot be recorded; try again") from exc
        return stored == 1
