"""The verifier's fallbacks (passcode/service/verify.py), against in-memory fakes of its two
ports: the live cache (Redis) and the status fallback (PostgreSQL). No server runs.

DESIGN §5: a cache that cannot decide sends verify to the system of record, behind a cap and
within the PostgreSQL deadline; Redis down means the decision and the scan both go there; when
neither can answer verify raises StatusUnavailable (the terminal is told ``unverified``) and never
admits; a decided scan is recorded once, wherever it can be.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.domain.model import Color, Decision, Reason
from passcode.domain.passfmt import PassClaims, kid_of, sign_pass
from passcode.domain.status import LiveStatus
from passcode.errors import Overloaded, StatusUnavailable, StoreUnavailable
from passcode.service.signing import KeyringHolder
from passcode.service.verify import ScanRequest, Verifier
from passcode.store.keyring import Keyring, SigningKey
from passcode.store.scans import ScanRow
from passcode.store.terminals import Terminal
from tests.helpers import FakeClock

NOW = 1_900_000_000
ISSUER = "https://passcode.test"
SUBJECT = b"\x11" * 16
TERMINAL = Terminal(uuid.UUID(int=7), "Metro Line 2, Gate A", revoked=False)
GREEN = LiveStatus(Color.GREEN, 3, NOW + 3600, "张*三")
RED = LiveStatus(Color.RED, 4, NOW + 3600, "张*三")


class FakeCache:
    """The live cache port: a status per subject, appended scans (a scan id seen is not
    appended again, as the scripts' dedupe marks do); ``down`` makes every call fail as a Redis
    that cannot answer does; ``gate``, when set, holds every answer until it opens."""

    def __init__(self) -> None:
        self.statuses: dict[bytes, LiveStatus] = {}
        self.records: list[tuple[str, str]] = []  # (scan id, record)
        self.down = False
        self.gate: asyncio.Event | None = None
        self.asked = 0  # calls made, answered or not

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
    ) -> LiveStatus | None:
        await self._answer()
        if self.down:
            raise StoreUnavailable("verify")
        live = self.statuses.get(subject)
        if live is None or not now < live.valid_until or pass_version > live.version:
            return None  # the script records nothing when it cannot decide
        self._append(scan_id, record)
        return live

    async def record(self, shard_key: bytes, scan_id: str, record: str) -> bool:
        await self._answer()
        if self.down:
            raise StoreUnavailable("record scan")
        return self._append(scan_id, record)

    async def _answer(self) -> None:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()

    def _append(self, scan_id: str, record: str) -> bool:
        if any(seen == scan_id for seen, _ in self.records):
            return False
        self.records.append((scan_id, record))
        return True


class FakeFallback:
    """The status fallback port: PostgreSQL's statuses and scan log in memory."""

    def __init__(self) -> None:
        self.statuses: dict[bytes, LiveStatus] = {}
        self.rows: list[ScanRow] = []
        self.reads: list[bool] = []  # the publish flag of each read
        self.down = False
        self.store_down = False
        self.gate: asyncio.Event | None = None  # set: reads wait for it
        self.delay = 0.0  # s each read takes
        self.inside = 0
        self.most_inside = 0

    async def live(
        self, subject: bytes, *, now: float, pass_version: int, publish: bool
    ) -> LiveStatus | None:
        self.reads.append(publish)
        if self.down:
            raise StoreUnavailable("verify fallback")
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            return self.statuses.get(subject)
        finally:
            self.inside -= 1

    async def store_scans(self, rows: Sequence[ScanRow]) -> None:
        if self.store_down:
            raise StoreUnavailable("store scans")
        self.rows.extend(rows)


def signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(kid_of(private.public_key()), private, private.public_key(), NOW - 86400)


KEY = signing_key()


def a_pass(version: int = 3, *, subject: bytes = SUBJECT) -> str:
    claims = PassClaims(
        issuer=ISSUER,
        subject=subject,
        issued_at=NOW - 60,
        expires_at=NOW + 240,
        token_id=uuid.uuid4().bytes,
        color=Color.GREEN,
        version=version,
    )
    return sign_pass(claims, KEY.private, KEY.kid)


def verifier(
    cache: FakeCache,
    fallback: FakeFallback,
    tmp_path: Path,
    *,
    concurrency: int = 4,
    pg_timeout: float = 5.0,
) -> Verifier:
    return Verifier(
        keys=KeyringHolder(tmp_path, Keyring((KEY,)), retire_after=86400),
        cache=cache,
        fallback=fallback,
        issuer=ISSUER,
        leeway=30,
        pg_timeout=pg_timeout,
        fallback_concurrency=concurrency,
        authenticated_cache=64,
        clock=FakeClock(NOW),
    )


def scan(code: str) -> ScanRequest:
    return ScanRequest(code, uuid.uuid4(), None)


def recorded_reason(record: str) -> str:
    return record.split("|")[7]


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def fallback() -> FakeFallback:
    return FakeFallback()


async def test_a_fresh_cached_status_decides_without_the_fallback(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    cache.statuses[SUBJECT] = GREEN
    request = scan(a_pass())
    outcome = await verifier(cache, fallback, tmp_path).verify(TERMINAL, request)
    assert outcome.verdict.decision is Decision.ADMIT
    assert outcome.holder == "张*三"
    assert outcome.scan_id == str(request.scan_id)
    assert fallback.reads == []
    assert [sid for sid, _ in cache.records] == [outcome.scan_id]


async def test_a_cache_miss_reads_postgres_publishes_and_records_the_scan_in_the_stream(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Nothing cached: the fallback is read with publish=True (the cache is up), its status
    decides, and the decided scan goes to the stream, not to PostgreSQL."""
    fallback.statuses[SUBJECT] = RED
    outcome = await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass(4)))
    assert (outcome.verdict.decision, outcome.verdict.reason) == (Decision.DENY, Reason.STATUS_RED)
    assert fallback.reads == [True]
    assert [recorded_reason(r) for _, r in cache.records] == ["status_red"]
    assert fallback.rows == []


async def test_a_pass_newer_than_the_cached_status_is_decided_by_the_fallback(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """The cached copy (version 3) is older than the pass (version 4): it may not decide."""
    cache.statuses[SUBJECT] = GREEN
    fallback.statuses[SUBJECT] = LiveStatus(Color.GREEN, 4, NOW + 3600, "张*三")
    outcome = await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass(4)))
    assert outcome.verdict.decision is Decision.ADMIT
    assert fallback.reads == [True]


async def test_no_status_anywhere_is_a_deny_recorded_once(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    outcome = await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass()))
    assert (outcome.verdict.decision, outcome.verdict.reason) == (Decision.DENY, Reason.SUPERSEDED)
    assert outcome.holder is None
    assert [recorded_reason(r) for _, r in cache.records] == ["superseded"]


async def test_redis_down_decides_from_postgres_and_stores_the_scan_there(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """The cache raises: the fallback is read without publishing (nothing to publish to) and
    the scan row, with the verdict it got, goes straight to PostgreSQL."""
    cache.down = True
    fallback.statuses[SUBJECT] = GREEN
    request = scan(a_pass())
    outcome = await verifier(cache, fallback, tmp_path).verify(TERMINAL, request)
    assert outcome.verdict.decision is Decision.ADMIT
    assert fallback.reads == [False]
    assert [(r.scan_id, r.decision, r.place, r.subject_id) for r in fallback.rows] == [
        (request.scan_id, "admit", TERMINAL.place, SUBJECT)
    ]
    assert cache.records == []


async def test_redis_and_postgres_down_never_admit(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    cache.down = True
    fallback.down = True
    with pytest.raises(StatusUnavailable):
        await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass()))
    assert fallback.rows == []


async def test_a_status_read_but_a_scan_that_cannot_be_stored_is_not_admitted(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Redis down, PostgreSQL reads but refuses the scan: admitting would lose the scan."""
    cache.down = True
    fallback.statuses[SUBJECT] = GREEN
    fallback.store_down = True
    with pytest.raises(StatusUnavailable, match="do not admit"):
        await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass()))


async def test_a_miss_with_postgres_down_is_unavailable_not_a_deny(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    fallback.down = True
    with pytest.raises(StatusUnavailable):
        await verifier(cache, fallback, tmp_path).verify(TERMINAL, scan(a_pass()))
    assert cache.records == []


async def test_a_fallback_that_hangs_is_cut_off_at_the_postgres_deadline(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """A read that never answers ends as StatusUnavailable once ``pg_timeout`` has passed."""
    fallback.gate = asyncio.Event()  # never set
    v = verifier(cache, fallback, tmp_path, pg_timeout=0.05)
    with pytest.raises(StatusUnavailable):
        await v.verify(TERMINAL, scan(a_pass()))
    assert fallback.inside == 0


async def test_fallback_reads_are_capped_at_the_configured_concurrency(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Eight misses at once, a cap of two: never more than two reads inside PostgreSQL."""
    fallback.statuses[SUBJECT] = GREEN
    fallback.gate = asyncio.Event()
    v = verifier(cache, fallback, tmp_path, concurrency=2)
    scans = [asyncio.create_task(v.verify(TERMINAL, scan(a_pass()))) for _ in range(8)]
    for _ in range(20):  # event-loop turns: every task gets as far as it can
        await asyncio.sleep(0)
    assert fallback.inside == 2
    fallback.gate.set()
    outcomes = await asyncio.gather(*scans)
    assert fallback.most_inside == 2
    assert {o.verdict.decision for o in outcomes} == {Decision.ADMIT}
    assert len(cache.records) == 8


async def test_an_invalid_code_is_recorded_in_the_stream_or_postgres_whichever_answers(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """A code that is not a pass needs no status; its scan is still recorded: in the stream,
    in PostgreSQL when Redis is down, and with both down verify says so."""
    v = verifier(cache, fallback, tmp_path)
    first = await v.verify(TERMINAL, scan("PC1:not-a-pass"))
    assert first.verdict.decision is Decision.INVALID
    assert [sid for sid, _ in cache.records] == [first.scan_id]
    cache.down = True
    second = await v.verify(TERMINAL, scan("PC1:not-a-pass"))
    assert [str(r.scan_id) for r in fallback.rows] == [second.scan_id]
    assert fallback.rows[0].subject_id is None
    fallback.store_down = True
    with pytest.raises(StatusUnavailable):
        await v.verify(TERMINAL, scan("PC1:not-a-pass"))
    assert fallback.reads == []


async def test_a_miss_decided_while_redis_fails_to_take_the_scan_stores_it_in_postgres(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Redis answers the verify script (a miss) and then fails: the decided scan goes to
    PostgreSQL instead of being lost."""

    class FailsAfterMiss(FakeCache):
        async def record(self, shard_key: bytes, scan_id: str, record: str) -> bool:
            raise StoreUnavailable("record scan")

    flaky = FailsAfterMiss()
    fallback.statuses[SUBJECT] = GREEN
    outcome = await verifier(flaky, fallback, tmp_path).verify(TERMINAL, scan(a_pass()))
    assert outcome.verdict.decision is Decision.ADMIT
    assert [str(r.scan_id) for r in fallback.rows] == [outcome.scan_id]


# --- batches (Verifier.verify_many) -------------------------------------------------------------

OTHER = b"\x22" * 16
MISSING = b"\x33" * 16


async def turns(n: int = 50) -> None:
    """Event-loop turns: every task gets as far as it can without an answer."""
    for _ in range(n):
        await asyncio.sleep(0)


def terminal_time(record: str) -> str:
    return record.split("|")[2]


async def test_a_batch_sends_every_scan_before_any_answer_and_keeps_its_order(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """All the batch's cache calls are made while none is answered (so the batcher can send them
    in one pipeline), and the outcomes come back in the batch's order: a cached green, a cached
    red, an invalid code, and a miss decided by the fallback."""
    cache.statuses[SUBJECT] = GREEN
    cache.statuses[OTHER] = LiveStatus(Color.RED, 3, NOW + 3600, "李*")
    fallback.statuses[MISSING] = GREEN
    cache.gate = asyncio.Event()
    scans = [
        scan(a_pass()),
        scan(a_pass(subject=OTHER)),
        scan("PC1:not-a-pass"),
        scan(a_pass(subject=MISSING)),
    ]
    batch = asyncio.create_task(verifier(cache, fallback, tmp_path).verify_many(TERMINAL, scans))
    await turns()
    assert cache.asked == len(scans)
    assert not batch.done()
    cache.gate.set()
    outcomes = await batch
    decided = [o for o in outcomes if not isinstance(o, StatusUnavailable)]
    assert [o.scan_id for o in decided] == [str(s.scan_id) for s in scans]
    assert [(o.verdict.decision, o.verdict.reason) for o in decided] == [
        (Decision.ADMIT, Reason.OK),
        (Decision.DENY, Reason.STATUS_RED),
        (Decision.INVALID, Reason.MALFORMED),
        (Decision.ADMIT, Reason.OK),
    ]
    assert fallback.reads == [True]
    assert sorted(sid for sid, _ in cache.records) == sorted(o.scan_id for o in decided)


async def test_one_scan_that_cannot_be_decided_is_its_own_answer_and_the_others_are_decided(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """A miss while PostgreSQL is down is StatusUnavailable in its place; the cached scans on
    either side of it are admitted and recorded all the same."""
    cache.statuses[SUBJECT] = GREEN
    fallback.down = True
    scans = [scan(a_pass()), scan(a_pass(subject=MISSING)), scan(a_pass())]
    outcomes = await verifier(cache, fallback, tmp_path).verify_many(TERMINAL, scans)
    first, missed, last = outcomes
    assert isinstance(missed, StatusUnavailable)
    assert not isinstance(first, StatusUnavailable)
    assert not isinstance(last, StatusUnavailable)
    assert (first.verdict.decision, last.verdict.decision) == (Decision.ADMIT, Decision.ADMIT)
    assert [sid for sid, _ in cache.records] == [first.scan_id, last.scan_id]


async def test_redis_down_for_a_batch_decides_each_scan_from_postgres_and_stores_it_there(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Every scan of the batch takes the Redis-down path of a single verify: read without
    publishing, and its row, with its own verdict, stored in PostgreSQL."""
    cache.down = True
    fallback.statuses[SUBJECT] = GREEN
    fallback.statuses[OTHER] = LiveStatus(Color.YELLOW, 3, NOW + 3600, "李*")
    scans = [scan(a_pass()), scan(a_pass(subject=OTHER)), scan("PC1:not-a-pass")]
    outcomes = await verifier(cache, fallback, tmp_path).verify_many(TERMINAL, scans)
    assert [o.verdict.decision for o in outcomes if not isinstance(o, StatusUnavailable)] == [
        Decision.ADMIT,
        Decision.DENY,
        Decision.INVALID,
    ]
    assert fallback.reads == [False, False]
    stored = {r.scan_id: r.decision for r in fallback.rows}
    assert stored == {
        s.scan_id: d for s, d in zip(scans, ["admit", "deny", "invalid"], strict=True)
    }
    assert cache.records == []


async def test_a_batch_of_misses_takes_half_the_fallback_cap_and_live_scans_get_the_rest(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Twelve misses in a batch, a cap of four: two of them are inside PostgreSQL at a time,
    and a single verify arriving meanwhile goes in beside them instead of queueing behind ten."""
    fallback.statuses[SUBJECT] = GREEN
    fallback.gate = asyncio.Event()
    v = verifier(cache, fallback, tmp_path, concurrency=4)
    scans = [scan(a_pass()) for _ in range(12)]
    misses = asyncio.create_task(v.verify_many(TERMINAL, scans))
    await turns()
    assert fallback.inside == 2
    live = asyncio.create_task(v.verify(TERMINAL, scan(a_pass())))
    await turns()
    assert fallback.inside == 3
    fallback.gate.set()
    outcomes = await misses
    assert (await live).verdict.decision is Decision.ADMIT
    assert fallback.most_inside == 3
    assert {o.verdict.decision for o in outcomes if not isinstance(o, StatusUnavailable)} == {
        Decision.ADMIT
    }
    assert len(outcomes) == 12


async def test_a_scans_postgres_deadline_is_not_spent_waiting_behind_its_own_batch(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """Reads of 20 ms, a deadline of 100 ms, one slot for the batch: ten misses take about
    200 ms in all, yet none is cut off, since each one's deadline starts at its slot."""
    fallback.statuses[SUBJECT] = GREEN
    fallback.delay = 0.02
    v = verifier(cache, fallback, tmp_path, concurrency=2, pg_timeout=0.1)
    outcomes = await v.verify_many(TERMINAL, [scan(a_pass()) for _ in range(10)])
    assert not [o for o in outcomes if isinstance(o, StatusUnavailable)]
    assert fallback.most_inside == 1


async def test_a_hung_fallback_costs_a_batch_one_deadline_not_one_per_scan(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """PostgreSQL never answers: the first miss is cut off at the deadline and the batch's
    misses still waiting fail at once without reading; the cached scan is still admitted."""
    cache.statuses[OTHER] = GREEN
    fallback.gate = asyncio.Event()  # never set
    v = verifier(cache, fallback, tmp_path, concurrency=2, pg_timeout=0.05)
    scans = [scan(a_pass()) for _ in range(6)] + [scan(a_pass(subject=OTHER))]
    outcomes = await v.verify_many(TERMINAL, scans)
    assert all(isinstance(o, StatusUnavailable) for o in outcomes[:6])
    cached = outcomes[6]
    assert not isinstance(cached, StatusUnavailable)
    assert cached.verdict.decision is Decision.ADMIT
    assert len(fallback.reads) == 1
    assert fallback.inside == 0


@pytest.mark.parametrize("redis", ["up", "down"])
async def test_a_scan_id_repeated_in_a_batch_is_decided_after_its_first_occurrence(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path, redis: str
) -> None:
    """The same scan id twice (a terminal retrying offline may upload it): the repeat's cache
    call waits until the first is decided, so the first is the one recorded (the stream's
    dedupe keeps it) or stored first (PostgreSQL's dedupe keeps it), as one at a time; both
    get the decision."""
    cache.statuses[SUBJECT] = GREEN
    fallback.statuses[SUBJECT] = GREEN
    cache.down = redis == "down"
    cache.gate = asyncio.Event()
    code, sid = a_pass(), uuid.uuid4()
    early = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
    later = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    scans = [ScanRequest(code, sid, early), scan(a_pass()), ScanRequest(code, sid, later)]
    batch = asyncio.create_task(verifier(cache, fallback, tmp_path).verify_many(TERMINAL, scans))
    await turns()
    assert cache.asked == 2
    cache.gate.set()
    outcomes = await batch
    decided = [o for o in outcomes if not isinstance(o, StatusUnavailable)]
    assert [o.verdict.decision for o in decided] == [Decision.ADMIT] * 3
    assert (decided[0].scan_id, decided[2].scan_id) == (str(sid), str(sid))
    if redis == "up":
        kept = [terminal_time(r) for s, r in cache.records if s == str(sid)]
        assert kept == [early.isoformat()]
    else:
        assert [r.terminal_time for r in fallback.rows if r.scan_id == sid] == [early, later]


async def test_a_long_batch_goes_to_the_cache_in_waves_of_a_hundred(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """250 scans: the first hundred are all asked before any answer, the next hundred only
    once those are answered, so one pipeline never holds a whole upload; all are admitted in
    order."""
    cache.statuses[SUBJECT] = GREEN
    cache.gate = asyncio.Event()
    scans = [scan(a_pass()) for _ in range(250)]
    batch = asyncio.create_task(verifier(cache, fallback, tmp_path).verify_many(TERMINAL, scans))
    await turns()
    assert cache.asked == 100
    cache.gate.set()
    outcomes = await batch
    assert cache.asked == 250
    decided = [o for o in outcomes if not isinstance(o, StatusUnavailable)]
    assert [o.scan_id for o in decided] == [str(s.scan_id) for s in scans]


async def test_batches_beyond_the_concurrency_wait_and_are_shed_after_the_wait(
    cache: FakeCache, fallback: FakeFallback, tmp_path: Path
) -> None:
    """One batch at a time: while the first is in the cache, a second asks nothing; with the
    first still unanswered after ``batch_wait`` the second is refused (Overloaded, a 503), and
    the first is admitted once the cache answers."""
    cache.statuses[SUBJECT] = GREEN
    cache.gate = asyncio.Event()
    v = Verifier(
        keys=KeyringHolder(tmp_path, Keyring((KEY,)), retire_after=86400),
        cache=cache,
        fallback=fallback,
        issuer=ISSUER,
        leeway=30,
        pg_timeout=5.0,
        fallback_concurrency=4,
        authenticated_cache=64,
        clock=FakeClock(NOW),
        batch_concurrency=1,
        batch_wait=0.05,
    )
    three = [scan(a_pass()) for _ in range(3)]
    first = asyncio.create_task(v.verify_many(TERMINAL, three))
    await turns()
    with pytest.raises(Overloaded):
        await v.verify_many(TERMINAL, [scan(a_pass())])
    assert cache.asked == 3
    cache.gate.set()
    outcomes = await first
    assert [o.verdict.decision for o in outcomes if not isinstance(o, StatusUnavailable)] == [
        Decision.ADMIT
    ] * 3
