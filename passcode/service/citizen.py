"""Citizen use cases: declare (申报) and show the pass (亮码)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from passcode.domain.clock import SYSTEM_CLOCK, Clock, utc_now
from passcode.domain.expiring import ExpiringCache
from passcode.domain.identity import Citizen
from passcode.domain.masking import mask_name
from passcode.domain.model import Color
from passcode.domain.passfmt import PassClaims, sign_pass
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Declaration, Policy, body_hash
from passcode.domain.status import LiveStatus, is_fresh
from passcode.errors import NoDeclaration, StoreUnavailable
from passcode.service import status
from passcode.service.signing import KeyringHolder
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire
from passcode.store.statuses import (
    StoredDeclaration,
    add_declaration,
    find_subject,
    read_status,
    upsert_subject,
)

# A subject's id never changes once created; the bound only caps memory.
SUBJECT_CACHE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class PassView:
    code: str
    color: Color
    issued_at: int
    expires_at: int
    refresh_in: int
    holder: str


class CitizenService:
    def __init__(
        self,
        *,
        pool: Pool,
        cache: Cache,
        sealer: Sealer,
        keys: KeyringHolder,
        policy: Policy,
        issuer: str,
        pass_ttl: int,
        refresh_margin: int,
        pg_timeout: float,
        cache_entries: int = 100_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self.pool = pool
        self.cache = cache
        self.sealer = sealer
        self.keys = keys
        self.policy = policy
        self.issuer = issuer
        self.pass_ttl = pass_ttl
        self.refresh_margin = refresh_margin
        self.pg_timeout = pg_timeout
        self._subjects: ExpiringCache[bytes, bytes] = ExpiringCache(cache_entries)
        self._passes: ExpiringCache[bytes, _Issued] = ExpiringCache(cache_entries)

    async def declare(
        self, citizen: Citizen, decl: Declaration, *, idempotency_key: str | None, body: object
    ) -> tuple[StoredDeclaration, LiveStatus]:
        """Store the declaration and the status it gives in one transaction (durable before
        it is acknowledged), then publish the status; one connection throughout."""
        async with acquire(self.pool, "declare", self.pg_timeout) as conn:
            async with conn.transaction():
                subject = await upsert_subject(
                    conn,
                    subject_id=os.urandom(16),
                    user_hash=self.sealer.user_hash(citizen.issuer, citizen.user_id),
                    sealed=self.sealer.seal(citizen.user_id),
                    masked=mask_name(citizen.name),
                )
                stored = await add_declaration(
                    conn,
                    subject,
                    decl,
                    idempotency_key=idempotency_key,
                    request_hash=body_hash(body),
                )
                live = await status.write_one(
                    conn,
                    subject,
                    now=utc_now(self.clock),
                    policy=self.policy,
                )
            assert live is not None  # the subject was just written
            await status.publish(conn, self.cache, [(subject, live)], timeout=self.pg_timeout)
        return stored, live

    async def live_status(self, citizen: Citizen) -> tuple[bytes, LiveStatus]:
        """The citizen's current status: Redis first, Postgres when missing, stale or down."""
        user_hash = self.sealer.user_hash(citizen.issuer, citizen.user_id)
        try:
            return await self._live_status(user_hash)
        except NoDeclaration:
            if self._subjects.get(user_hash, now=self.clock.now()) is None:
                raise
            # The remembered subject may have been erased on request (here or on another
            # replica) and the user declared since as a new one: look it up again, once.
            self._subjects.discard(user_hash)
            return await self._live_status(user_hash)

    async def _live_status(self, user_hash: bytes) -> tuple[bytes, LiveStatus]:
        now = self.clock.now()
        subject = self._subjects.get(user_hash, now=now)
        if subject is None:
            subject = await find_subject(self.pool, user_hash, timeout=self.pg_timeout)
            if subject is None:
                raise NoDeclaration("no declaration yet: POST /v1/declarations first")
            self._subjects.put(user_hash, subject, expires_at=now + SUBJECT_CACHE_SECONDS, now=now)
        try:
            live = await self.cache.get_status(subject)
        except StoreUnavailable:
            live = await read_status(self.pool, subject, timeout=self.pg_timeout)
        if live is None or not is_fresh(live.valid_until, now):
            live = await status.refresh(
                self.pool,
                self.cache,
                subject,
                now=datetime.fromtimestamp(now, UTC),
                policy=self.policy,
                timeout=self.pg_timeout,
            )
        if live is None or live.color is None:
            raise NoDeclaration("no valid declaration: declare again to get a pass")
        return subject, live

    async def current_pass(self, citizen: Citizen) -> PassView:
        """A signed pass that never outlives the status it shows.

        A pass signed earlier for the same status version, by the key that signs now, and with at
        least half its lifetime left is handed out again: an app refreshing early (or a citizen
        tapping twice) costs no new signature.
        """
        subject, live = await self.live_status(citizen)
        assert live.color is not None
        now = int(self.clock.now())
        key = self.keys.signer(now)
        issued = self._passes.get(subject, now=now)
        if (
            issued is not None
            and issued.version == live.version
            and issued.kid == key.kid
            and issued.view.color is live.color
            and issued.view.holder == live.holder
        ):
            view = issued.view
            return replace(view, refresh_in=max(1, view.expires_at - now - self.refresh_margin))
        expires_at = min(now + self.pass_ttl, live.valid_until)
        claims = PassClaims(
            issuer=self.issuer,
            subject=subject,
            issued_at=now,
            expires_at=expires_at,
            token_id=os.urandom(8),
            color=live.color,
            version=live.version,
        )
        code = sign_pass(claims, key.private, key.kid)
        refresh_in = max(1, expires_at - now - self.refresh_margin)
        view = PassView(code, live.color, now, expires_at, refresh_in, live.holder)
        reuse_until = expires_at - self.pass_ttl // 2
        self._passes.put(
            subject, _Issued(view, live.version, key.kid), expires_at=reuse_until, now=now
        )
        return view


@dataclass(frozen=True, slots=True)
class _Issued:
    view: PassView
    version: int
    kid: bytes
