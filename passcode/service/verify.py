"""Verify (扫码): check the pass, read the live status, record the scan — DESIGN §3 and §5.

Hot path: the pass is checked in memory, then one Redis round trip reads the live status and
appends the scan. Postgres is touched only when the cache cannot answer (miss, stale entry, or
Redis down), and then behind a concurrency cap. Never admit without a live status.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.model import Decision, Reason
from passcode.domain.passcache import Authenticated, AuthenticatedPasses
from passcode.domain.passfmt import PassClaims, PassError, authenticate_pass, check_window
from passcode.domain.rules import Policy
from passcode.domain.verdict import Verdict, invalid, judge_live
from passcode.errors import StatusUnavailable, StoreUnavailable
from passcode.service.signing import KeyringHolder
from passcode.store.cache import Cache, LiveStatus
from passcode.store.pg import Pool
from passcode.store.scans import ScanRow, encode_record, insert_scans
from passcode.store.statuses import push_to_cache, read_status, refresh_status
from passcode.store.terminals import Terminal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScanRequest:
    code: str
    scan_id: uuid.UUID | None
    scanned_at: datetime | None


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    verdict: Verdict
    holder: str | None
    scan_id: uuid.UUID
    server_time: datetime


class Verifier:
    def __init__(
        self,
        *,
        keys: KeyringHolder,
        cache: Cache,
        pool: Pool,
        policy: Policy,
        issuer: str,
        leeway: int,
        pg_timeout: float,
        fallback_concurrency: int,
        dedupe_window: int,
        authenticated_cache: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self._now = clock.now  # bound once: the hot path makes one call, no allocation
        self.keys = keys
        self.cache = cache
        self.pool = pool
        self.policy = policy
        self.issuer = issuer
        self.leeway = leeway
        self.pg_timeout = pg_timeout
        self._fallback = asyncio.Semaphore(fallback_concurrency)
        self.dedupe_window = dedupe_window
        self.authenticated = AuthenticatedPasses(authenticated_cache, leeway=leeway)

    async def verify(self, terminal: Terminal, scan: ScanRequest) -> VerifyOutcome:
        now = self._now()
        now_s = int(now)
        server_time = datetime.fromtimestamp(now, UTC)
        scan_id = scan.scan_id or uuid.uuid4()
        sid = str(scan_id)

        def record(subject: bytes | None, version: int, verdict: Verdict | None) -> str:
            return encode_record(
                scan_id=sid,
                at_ms=int(now * 1000),
                terminal_time=scan.scanned_at,
                terminal_id=str(terminal.id),
                subject=subject,
                pass_version=version,
                verdict=verdict,
            )

        try:
            claims = self._authenticate(scan.code, now_s)
            check_window(claims, now=now_s, leeway=self.leeway)
        except PassError as exc:
            verdict = invalid(exc.reason)
            row = _row(scan, scan_id, server_time, terminal, None, verdict)
            await self._record(scan_id.bytes, sid, record(None, 0, verdict), row)
            return VerifyOutcome(verdict, None, scan_id, server_time)

        try:
            live = await self.cache.verify_and_record(
                claims.subject,
                now=now_s,
                pass_version=claims.version,
                scan_id=sid,
                record=record(claims.subject, claims.version, None),
                token_id=claims.token_id,
                place=terminal.place,
            )
        except StoreUnavailable:
            return await self._without_cache(claims, scan, scan_id, server_time, terminal, now)
        if live is None:
            live = await self._load_live(claims, now, cache_up=True)
            verdict = _judge(claims, live)
            row = _row(scan, scan_id, server_time, terminal, claims.subject, verdict)
            await self._record(
                claims.subject, sid, record(claims.subject, claims.version, verdict), row
            )
        else:
            verdict = _judge(claims, live)
        holder = live.holder if live is not None else None
        return VerifyOutcome(verdict, holder, scan_id, server_time)

    def _authenticate(self, code: str, now: int) -> PassClaims:
        """Signature and structure, checked once per distinct code while its key is published."""
        keys = self.keys.verification_keys(now)
        hit = self.authenticated.get(code, now=now)
        if hit is not None and hit.kid in keys:
            return hit.claims
        claims, kid = authenticate_pass(code, keys, issuer=self.issuer)
        self.authenticated.put(code, Authenticated(claims, kid), now=now)
        return claims

    async def _load_live(
        self, claims: PassClaims, now: float, *, cache_up: bool
    ) -> LiveStatus | None:
        """The status from Postgres, re-derived when stale; capped so Postgres is never flooded."""
        try:
            async with asyncio.timeout(self.pg_timeout):
                async with self._fallback:
                    live = await read_status(self.pool, claims.subject, timeout=self.pg_timeout)
                    if (
                        live is not None
                        and live.valid_until >= now
                        and live.version >= claims.version
                    ):
                        if cache_up:
                            await push_to_cache(
                                self.pool, self.cache, claims.subject, live, timeout=self.pg_timeout
                            )
                        return live
                    if live is None:
                        return None
                    return await refresh_status(
                        self.pool,
                        self.cache,
                        claims.subject,
                        now=datetime.fromtimestamp(now, UTC),
                        policy=self.policy,
                        timeout=self.pg_timeout,
                    )
        except (StoreUnavailable, TimeoutError) as exc:
            raise StatusUnavailable("the live status cannot be read; do not admit") from exc

    async def _without_cache(
        self,
        claims: PassClaims,
        scan: ScanRequest,
        scan_id: uuid.UUID,
        server_time: datetime,
        terminal: Terminal,
        now: float,
    ) -> VerifyOutcome:
        """Redis is down: decide from Postgres and store the scan there directly."""
        live = await self._load_live(claims, now, cache_up=False)
        verdict = _judge(claims, live)
        row = _row(scan, scan_id, server_time, terminal, claims.subject, verdict)
        try:
            await insert_scans(
                self.pool, [row], timeout=self.pg_timeout, dedupe_window=self.dedupe_window
            )
        except StoreUnavailable as exc:
            raise StatusUnavailable("the scan cannot be recorded; do not admit") from exc
        return VerifyOutcome(verdict, live.holder if live else None, scan_id, server_time)

    async def _record(self, shard_key: bytes, sid: str, record: str, row: ScanRow) -> None:
        """Append a decided scan to the stream, or straight to Postgres when Redis fails."""
        try:
            await self.cache.record(shard_key, sid, record)
        except StoreUnavailable:
            try:
                await insert_scans(
                    self.pool, [row], timeout=self.pg_timeout, dedupe_window=self.dedupe_window
                )
            except StoreUnavailable as exc:
                raise StatusUnavailable("the scan cannot be recorded") from exc


def _judge(claims: PassClaims, live: LiveStatus | None) -> Verdict:
    if live is None:
        return Verdict(Decision.DENY, Reason.SUPERSEDED, None)
    return judge_live(claims.version, live.color, live.version)


def _row(
    scan: ScanRequest,
    scan_id: uuid.UUID,
    server_time: datetime,
    terminal: Terminal,
    subject: bytes | None,
    verdict: Verdict,
) -> ScanRow:
    return ScanRow(
        scanned_at=server_time,
        scan_id=scan_id,
        terminal_time=scan.scanned_at,
        terminal_id=terminal.id,
        place=terminal.place,
        subject_id=subject,
        decision=verdict.decision.value,
        reason=verdict.reason.value,
        color=verdict.color.value if verdict.color else None,
    )
