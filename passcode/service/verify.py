"""Verify (扫码): check the pass, read the live status, record the scan — DESIGN §3 and §5.

Hot path: the pass is checked in memory, then one Redis round trip reads the live status and
appends the scan. Postgres is touched only when the cache cannot answer (miss, stale entry, or
Redis down), and then behind a concurrency cap. Never admit without a live status.

A batch (:meth:`Verifier.verify_many`) runs its scans at once, so the coalescing batcher sends
them to Redis in one pipeline: one round trip for up to :data:`BATCH_WAVE` scans, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.foreign import kind_of
from passcode.domain.model import Decision, Kind, Reason
from passcode.domain.passcache import Authenticated, AuthenticatedPasses
from passcode.domain.passfmt import (
    PREFIX,
    PassClaims,
    PassError,
    authenticate_pass,
    check_window,
)
from passcode.domain.rules import Policy
from passcode.domain.status import LiveStatus, decides
from passcode.domain.verdict import Verdict, invalid, judge_live
from passcode.errors import Overloaded, StatusUnavailable, StoreUnavailable
from passcode.service import status
from passcode.service.signing import KeyringHolder
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire
from passcode.store.scans import ScanRow, encode_record, insert_scans
from passcode.store.statuses import live_status
from passcode.store.terminals import Terminal

if TYPE_CHECKING:  # its readers are imported where the app wires it
    from passcode.service.foreign import ForeignJudge, PolicySource

log = logging.getLogger(__name__)

# A batch's scans go to Redis this many at a time, and this many batches at once per process
# (more wait, for at most BATCH_WAIT seconds, then 503): what a pipeline holds stays within
# what Redis answers inside its deadline (``redis_timeout``; 64 uploads of 100 scans at once,
# one pipeline of 6,400 scripts, missed 0.5 s on a Redis fsyncing every write: thousands of
# scans then fell back to PostgreSQL), and a live terminal's scan waits behind at most
# BATCH_CONCURRENCY waves in the pipeline it rides in. 4, 8 and 16 batches at once served
# about the same scans/s on the bench (noisy machine); 8 keeps the pipeline under 1,000.
BATCH_WAVE = 100
BATCH_CONCURRENCY = 8
BATCH_WAIT = 10.0


class ScanRequest(NamedTuple):
    """One scan as a terminal sent it (named tuples: see :class:`LiveStatus`)."""

    code: str
    scan_id: uuid.UUID | None
    scanned_at: datetime | None


class VerifyOutcome(NamedTuple):
    verdict: Verdict
    holder: str | None
    scan_id: str  # canonical lower-case hyphenated UUID
    server_time: float  # Unix seconds
    kind: Kind | None = Kind.PASSCODE  # None: a text of no known kind


# A card is judged by its holder's live colour only (docs/pass-format.md): given as the pass's
# status version to judge_live, in the answer and in the stream record the drain judges
# again, it is never older than the live status, so ``superseded`` never applies to it.
CARD_VERSION = 2**62

# A genuine pass or card at a place whose policy does not accept its kind (DESIGN §3).
_NOT_ACCEPTED = Verdict(Decision.DENY, Reason.NOT_ACCEPTED, None)


class RevokedCards(Protocol):
    """Printed cards reported lost (:class:`passcode.service.cards.CardRegistry`)."""

    def is_revoked(self, serial: bytes) -> bool: ...


class ScanIds:
    """Time-ordered (version 7, RFC 9562) UUIDs as text: the scan's millisecond, then 74 bits
    from the OS's CSPRNG, drawn 256 ids at a time.

    Time-ordered because every stored scan is an entry in the scan log's ``scan_id`` index:
    random ids land on random pages of it, so each insert of the drain dirties (and logs) a
    page of its own, and a day's partition costs more per row the more it holds (draining
    300k scans into an empty partition and into one of 1.5M rows: random ids 69–71k and
    57–58k rows/s, time-ordered 71–72k and 67–69k; ``loadtest/drain_bench.py --preload``).
    ``str(uuid.uuid4())`` would also cost a system call and two object conversions per scan;
    this is a slice of a hex string.
    """

    def __init__(self, batch: int = 256) -> None:
        self.batch = batch
        self._hex = ""
        self._at = 0
        self._ms = -1
        self._ms_hex = ""

    def next(self, now: float) -> str:
        """An id for a scan at ``now`` (Unix seconds)."""
        ms = int(now * 1000)
        if ms != self._ms:
            self._ms, self._ms_hex = ms, f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        at = self._at
        if at >= len(self._hex):
            raw = bytearray(os.urandom(10 * self.batch))
            raw[2::10] = bytes((b & 0x3F) | 0x80 for b in raw[2::10])  # RFC 9562 variant
            self._hex = raw.hex()
            at = 0
        h, t = self._hex, self._ms_hex
        self._at = at + 20
        # Of an id's 20 hex digits: 0-2 rand_a (after the version digit), 3 unused, 4 the
        # variant's (byte 2 above), 5-19 the rest of rand_b.
        return f"{t[:8]}-{t[8:]}-7{h[at : at + 3]}-{h[at + 4 : at + 8]}-{h[at + 8 : at + 20]}"


class LiveCache(Protocol):
    """The hot path's port (Redis, :class:`passcode.store.cache.Cache`): one round trip reads
    the live status and appends the scan. Both raise StoreUnavailable when Redis cannot answer."""

    async def verify_and_record(
        self,
        subject: bytes,
        *,
        now: int,
        pass_version: int,
        scan_id: str,
        record: str,
        token_id: bytes,
        place: str,
    ) -> LiveStatus | None: ...

    async def record(self, shard_key: bytes, scan_id: str, record: str) -> bool: ...


class StatusFallback(Protocol):
    """Where verify turns when the cache cannot decide (DESIGN §5): the system of record.

    Both raise StoreUnavailable or TimeoutError when it cannot answer either.
    """

    async def live(
        self, subject: bytes, *, now: float, pass_version: int, publish: bool
    ) -> LiveStatus | None:
        """The subject's status, re-derived when the stored one cannot decide; ``publish``
        also writes it to the cache (which is up)."""
        ...

    async def store_scans(self, rows: Sequence[ScanRow]) -> None:
        """Record decided scans directly, when the scan stream cannot take them."""
        ...


class PostgresFallback:
    """:class:`StatusFallback` on PostgreSQL: one connection per read."""

    def __init__(
        self, *, pool: Pool, cache: Cache, policy: Policy, timeout: float, dedupe_window: int
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.policy = policy
        self.timeout = timeout
        self.dedupe_window = dedupe_window

    async def live(
        self, subject: bytes, *, now: float, pass_version: int, publish: bool
    ) -> LiveStatus | None:
        timeout = self.timeout
        async with acquire(self.pool, "verify fallback", timeout) as conn:
            live = await live_status(conn, subject)
            if live is None:
                return None
            if decides(live, now=now, pass_version=pass_version):
                if publish:
                    await status.publish(conn, self.cache, [(subject, live)], timeout=timeout)
                return live
            return await status.refresh_on(
                conn,
                self.cache,
                subject,
                now=datetime.fromtimestamp(now, UTC),
                policy=self.policy,
                timeout=timeout,
            )

    async def store_scans(self, rows: Sequence[ScanRow]) -> None:
        await insert_scans(
            self.pool, list(rows), timeout=self.timeout, dedupe_window=self.dedupe_window
        )


class BatchShare:
    """A batch's share of the fallback: at most ``slots`` of its scans at PostgreSQL at once.

    So a batch of 500 misses (an offline terminal's upload while Redis is down) queues behind
    its own share instead of filling the fallback's queue ahead of live terminals' scans, whose
    deadline covers that wait; and a scan's PostgreSQL deadline starts once it has a slot, so
    it is not spent waiting behind its own batch. Once the fallback has failed one scan, the
    batch's scans still waiting for it fail at once: a hung PostgreSQL costs a batch one
    deadline, not one per slot's worth of scans.
    """

    __slots__ = ("_slots", "failed")

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.failed = False

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            if self.failed:
                raise StatusUnavailable("the fallback failed an earlier scan of this batch")
            try:
                yield
            except (StatusUnavailable, StoreUnavailable, TimeoutError):
                self.failed = True
                raise


class Verifier:
    def __init__(
        self,
        *,
        keys: KeyringHolder,
        cache: LiveCache,
        fallback: StatusFallback,
        issuer: str,
        leeway: int,
        pg_timeout: float,
        fallback_concurrency: int,
        authenticated_cache: int,
        clock: Clock = SYSTEM_CLOCK,
        batch_concurrency: int = BATCH_CONCURRENCY,
        batch_wait: float = BATCH_WAIT,
        foreign: ForeignJudge | None = None,
        cards: RevokedCards | None = None,
        places: PolicySource | None = None,
    ) -> None:
        self.clock = clock
        self.foreign = foreign  # None: foreign certificates are `unsupported`
        self.cards = cards
        self.places = places  # None: every place accepts our passes and cards
        self._now = clock.now  # bound once: the hot path makes one call, no allocation
        self.keys = keys
        self.cache = cache
        self.fallback = fallback
        self.issuer = issuer
        self.leeway = leeway
        self.pg_timeout = pg_timeout
        self._fallback = asyncio.Semaphore(fallback_concurrency)
        self._batch_slots = max(1, fallback_concurrency // 2)  # the rest stays for live scans
        self._batches = asyncio.Semaphore(batch_concurrency)
        self.batch_wait = batch_wait
        self.authenticated = AuthenticatedPasses(authenticated_cache, leeway=leeway)
        self._scan_ids = ScanIds()

    async def verify(
        self, terminal: Terminal, scan: ScanRequest, *, share: BatchShare | None = None
    ) -> VerifyOutcome:
        """One scan's outcome; raises StatusUnavailable when it must not be admitted.
        ``share``: the batch's share of the fallback (see :meth:`verify_many`)."""
        now = self._now()
        now_s = int(now)
        sid = str(scan.scan_id) if scan.scan_id is not None else self._scan_ids.next(now)
        code = scan.code
        if not code.startswith(PREFIX):
            foreign = kind_of(code)
            if foreign is not None and self.foreign is not None:
                return await self._verify_foreign(terminal, scan, sid, now, foreign, share)
        kind = Kind.PASSCODE
        try:
            claims = self._authenticate(code, now_s)
            check_window(claims, now=now_s, leeway=self.leeway)
            if claims.card is not None:
                kind = Kind.CARD
                if self.cards is not None and self.cards.is_revoked(claims.card):
                    raise PassError(Reason.REVOKED, "card reported lost")
        except PassError as exc:
            verdict = invalid(exc.reason)
            known = kind if code.startswith(PREFIX) else None
            row = _row(scan, sid, now, terminal, None, verdict, known)
            record = _record(scan, sid, now, terminal, None, 0, verdict, known)
            await self._record(uuid.UUID(sid).bytes, sid, record, row, share)
            return VerifyOutcome(verdict, None, sid, now, known)

        subject = claims.subject
        places = self.places
        if places is not None and kind not in places.policy_for(terminal.place).accepts:
            row = _row(scan, sid, now, terminal, subject, _NOT_ACCEPTED, kind)
            record = _record(scan, sid, now, terminal, subject, 0, _NOT_ACCEPTED, kind)
            await self._record(subject, sid, record, row, share)
            return VerifyOutcome(_NOT_ACCEPTED, None, sid, now, kind)
        version = claims.version if kind is Kind.PASSCODE else CARD_VERSION
        try:
            live = await self.cache.verify_and_record(
                subject,
                now=now_s,
                pass_version=claims.version,
                scan_id=sid,
                record=_record(scan, sid, now, terminal, subject, version, None, kind),
                token_id=claims.token_id,
                place=terminal.place,
            )
        except StoreUnavailable:
            return await self._without_cache(claims, scan, sid, terminal, now, share, kind)
        if live is None:
            live = await self._load_live(claims, now, cache_up=True, share=share)
            verdict = _judge(version, live)
            row = _row(scan, sid, now, terminal, subject, verdict, kind)
            record = _record(scan, sid, now, terminal, subject, version, verdict, kind)
            await self._record(subject, sid, record, row, share)
            holder = live.holder if live is not None else None
            return VerifyOutcome(verdict, holder, sid, now, kind)
        verdict = judge_live(version, live.color, live.version)
        return VerifyOutcome(verdict, live.holder, sid, now, kind)

    async def _verify_foreign(
        self,
        terminal: Terminal,
        scan: ScanRequest,
        sid: str,
        now: float,
        kind: Kind,
        share: BatchShare | None,
    ) -> VerifyOutcome:
        """A foreign certificate, judged in process by the place's policy; recorded with its
        kind, issuer and the keyed hash of its id, never its holder or payload."""
        assert self.foreign is not None
        found = self.foreign.judge(scan.code, kind, place=terminal.place, now=int(now))
        verdict = found.verdict
        row = _row(scan, sid, now, terminal, None, verdict, kind, found.issuer, found.cert_hash)
        record = _record(
            scan, sid, now, terminal, None, 0, verdict, kind, found.issuer, found.cert_hash
        )
        shard = found.cert_hash or uuid.UUID(sid).bytes
        await self._record(shard, sid, record, row, share)
        return VerifyOutcome(verdict, found.holder, sid, now, kind)

    async def verify_many(
        self, terminal: Terminal, scans: Sequence[ScanRequest]
    ) -> list[VerifyOutcome | StatusUnavailable]:
        """A batch's outcomes in its order, each scan verified as :meth:`verify` does; a scan
        that must not be admitted has its StatusUnavailable in its place, and the others are
        decided and recorded all the same.

        The scans of a wave (:data:`BATCH_WAVE`) start in one event-loop turn, so their cache
        calls share one pipeline. A scan id the batch repeats waits for its previous
        occurrence, so the repeats are decided, deduplicated and recorded in the batch's
        order, as one at a time. Raises Overloaded when the batches already being verified
        leave no room for :attr:`batch_wait` seconds.
        """
        try:
            async with asyncio.timeout(self.batch_wait):
                await self._batches.acquire()
        except TimeoutError:
            raise Overloaded("too many batches are being verified; try again shortly") from None
        try:
            share = BatchShare(self._batch_slots)
            last: dict[uuid.UUID, asyncio.Future[VerifyOutcome | StatusUnavailable]] = {}
            outcomes: list[VerifyOutcome | StatusUnavailable] = []
            for first in range(0, len(scans), BATCH_WAVE):
                running = []
                for scan in scans[first : first + BATCH_WAVE]:
                    before = None if scan.scan_id is None else last.get(scan.scan_id)
                    task = asyncio.ensure_future(self._in_batch(terminal, scan, share, before))
                    if scan.scan_id is not None:
                        last[scan.scan_id] = task
                    running.append(task)
                outcomes += await asyncio.gather(*running)
            return outcomes
        finally:
            self._batches.release()

    async def _in_batch(
        self,
        terminal: Terminal,
        scan: ScanRequest,
        share: BatchShare,
        before: asyncio.Future[VerifyOutcome | StatusUnavailable] | None,
    ) -> VerifyOutcome | StatusUnavailable:
        if before is not None and not before.done():
            await asyncio.wait((before,))
        try:
            return await self.verify(terminal, scan, share=share)
        except StatusUnavailable as exc:
            return exc

    def _authenticate(self, code: str, now: int) -> PassClaims:
        """Signature and structure, checked once per distinct code while its key is published
        (for a printed card: while its key verifies cards, up to a year after retirement)."""
        keys = self.keys.verification_keys(now)
        hit = self.authenticated.get(code, now=now)
        if hit is not None and (hit.kid in keys or _card_key(hit, self.keys.card_keys(now))):
            return hit.claims
        try:
            claims, kid = authenticate_pass(code, keys, issuer=self.issuer)
        except PassError as exc:
            if exc.reason is not Reason.UNKNOWN_KEY:
                raise
            claims, kid = authenticate_pass(code, self.keys.card_keys(now), issuer=self.issuer)
            if claims.card is None:  # a phone's pass signed by a key retired for passes
                raise
        self.authenticated.put(code, Authenticated(claims, kid), now=now)
        return claims

    async def _load_live(
        self, claims: PassClaims, now: float, *, cache_up: bool, share: BatchShare | None = None
    ) -> LiveStatus | None:
        """The status from the fallback, within the PostgreSQL deadline and behind a cap on
        concurrent reads, so Postgres is never flooded (the deadline covers the wait for the
        cap, not the wait for a batch's share)."""
        if share is not None:
            async with share.slot():
                return await self._load_live(claims, now, cache_up=cache_up)
        try:
            async with asyncio.timeout(self.pg_timeout), self._fallback:
                return await self.fallback.live(
                    claims.subject, now=now, pass_version=claims.version, publish=cache_up
                )
        except (StoreUnavailable, TimeoutError) as exc:
            raise StatusUnavailable("the live status cannot be read; do not admit") from exc

    async def _without_cache(
        self,
        claims: PassClaims,
        scan: ScanRequest,
        sid: str,
        terminal: Terminal,
        now: float,
        share: BatchShare | None,
        kind: Kind,
    ) -> VerifyOutcome:
        """Redis is down: decide from Postgres and store the scan there directly."""
        live = await self._load_live(claims, now, cache_up=False, share=share)
        verdict = _judge(claims.version if kind is Kind.PASSCODE else CARD_VERSION, live)
        row = _row(scan, sid, now, terminal, claims.subject, verdict, kind)
        try:
            await self._store(row, share)
        except (StoreUnavailable, TimeoutError) as exc:
            raise StatusUnavailable("the scan cannot be recorded; do not admit") from exc
        return VerifyOutcome(verdict, live.holder if live else None, sid, now, kind)

    async def _record(
        self, shard_key: bytes, sid: str, record: str, row: ScanRow, share: BatchShare | None
    ) -> None:
        """Append a decided scan to the stream, or straight to Postgres when Redis fails."""
        try:
            await self.cache.record(shard_key, sid, record)
        except StoreUnavailable:
            try:
                await self._store(row, share)
            except (StoreUnavailable, TimeoutError) as exc:
                raise StatusUnavailable("the scan cannot be recorded") from exc

    async def _store(self, row: ScanRow, share: BatchShare | None) -> None:
        if share is not None:
            async with share.slot():
                await self._store(row, None)
            return
        async with asyncio.timeout(self.pg_timeout):
            await self.fallback.store_scans([row])


def _card_key(hit: Authenticated, card_keys: dict[bytes, Ed25519PublicKey]) -> bool:
    return hit.claims.card is not None and hit.kid in card_keys


def _judge(pass_version: int, live: LiveStatus | None) -> Verdict:
    if live is None:
        return Verdict(Decision.DENY, Reason.SUPERSEDED, None)
    return judge_live(pass_version, live.color, live.version)


def _record(
    scan: ScanRequest,
    sid: str,
    now: float,
    terminal: Terminal,
    subject: bytes | None,
    version: int,
    verdict: Verdict | None,
    kind: Kind | None = Kind.PASSCODE,
    issuer: str = "",
    cert_hash: bytes = b"",
) -> str:
    """The scan as the stream carries it (``verdict`` None: the verify script adds a snapshot)."""
    return encode_record(
        scan_id=sid,
        at_ms=int(now * 1000),
        terminal_time=scan.scanned_at,
        terminal_id=terminal.id_text,
        subject=subject,
        pass_version=version,
        verdict=verdict,
        kind=kind,
        issuer=issuer,
        cert_hash=cert_hash,
    )


def _row(
    scan: ScanRequest,
    sid: str,
    now: float,
    terminal: Terminal,
    subject: bytes | None,
    verdict: Verdict,
    kind: Kind | None = Kind.PASSCODE,
    issuer: str = "",
    cert_hash: bytes = b"",
) -> ScanRow:
    """The scan as a Postgres row, for when it goes there directly (Redis down)."""
    return ScanRow(
        scanned_at=datetime.fromtimestamp(now, UTC),
        scan_id=uuid.UUID(sid),
        terminal_time=scan.scanned_at,
        terminal_id=terminal.id,
        place=terminal.place,
        subject_id=subject,
        decision=verdict.decision.value,
        reason=verdict.reason.value,
        color=verdict.color.value if verdict.color else None,
        kind=kind.value if kind is not None else None,
        issuer=issuer or None,
        cert_hash=cert_hash or None,
    )
