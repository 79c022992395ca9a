"""Fault tests (DESIGN §5): real load on a real service process while one real server breaks.

Each test starts its own Redis, PostgreSQL and ``passcode serve``, seeds citizens and a terminal
through the API, runs verifies with unique scan ids (bounded in time and count), injects one
fault, and prints a row. Every row asserts the three promises: no scan that got a 200 is lost,
no admit without a live status, no answer later than the deadline chain plus a margin.

``make chaos`` runs them with ``CHAOS_SECONDS=10`` (each fault lasts that long); the normal
suite runs them with short faults.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.chaos.harness import (
    LATENCY_BOUND,
    LEAD,
    Load,
    N,
    PgTemplate,
    PostgresServer,
    RedisServer,
    Result,
    Row,
    Seeded,
    Service,
    SlowProxy,
    make_row,
    seed,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TAIL = min(0.5 + N / 5, 3.0)  # load after recovery
# Long enough for whole requests (each waits out a Redis deadline or two) to fit inside.
BOTH_DOWN = max(N, 3.0)


@dataclass
class Stores:
    redis: RedisServer
    postgres: PostgresServer


@pytest.fixture
def stores(tmp_path: Path, pg_template: PgTemplate) -> Iterator[Stores]:
    redis = RedisServer(tmp_path / "redis")
    postgres = PostgresServer(pg_template)
    try:
        redis.start()
        postgres.start()
        yield Stores(redis, postgres)
    finally:
        redis.stop()
        postgres.stop()


@dataclass
class Rig:
    stores: Stores
    service: Service
    seeded: Seeded


async def _rig(
    tmp_path: Path, stores: Stores, *, database_url: str | None = None, redis_url: str | None = None
) -> tuple[Service, Seeded]:
    service = Service(
        tmp_path / "service",
        database_url=database_url or stores.postgres.url,
        redis_url=redis_url or stores.redis.url,
    )
    await asyncio.to_thread(service.start)
    try:
        seeded = await seed(service)
    except BaseException:
        service.stop()
        raise
    return service, seeded


@pytest.fixture
async def rig(tmp_path: Path, stores: Stores) -> AsyncIterator[Rig]:
    service, seeded = await _rig(tmp_path, stores)
    try:
        yield Rig(stores, service, seeded)
    finally:
        await asyncio.to_thread(service.stop)


async def under_load(
    service: Service, seeded: Seeded, fault: Callable[[], Awaitable[None]]
) -> list[Result]:
    """Load for LEAD seconds, then the fault (which restores what it broke), then TAIL seconds."""
    load = Load(service, seeded)
    running = asyncio.create_task(load.run(seconds=LEAD + N + TAIL + 120))
    try:
        await asyncio.sleep(LEAD)
        await fault()
        await asyncio.sleep(TAIL)
    finally:
        load.stop()
        await running
    return load.results


def check(row: Row) -> None:
    assert row.acknowledged > 0, "the load never got a single scan through"
    assert row.lost == 0, f"{row.lost} acknowledged scans are not in Postgres"
    assert row.blind_admits == 0, f"{row.blind_admits} admits without a live status"
    assert row.worst <= LATENCY_BOUND, f"an answer took {row.worst:.2f} s > {LATENCY_BOUND} s"


async def test_redis_frozen_then_resumed(rig: Rig) -> None:
    """Redis SIGSTOPped for N s: verify falls back to Postgres within its deadline, scans stay."""

    async def fault() -> None:
        rig.stores.redis.signal(signal.SIGSTOP)
        await asyncio.sleep(N)
        rig.stores.redis.signal(signal.SIGCONT)

    results = await under_load(rig.service, rig.seeded, fault)
    row = await make_row(f"redis SIGSTOP {N:g} s, SIGCONT", results, rig.stores.postgres.url)
    check(row)


async def test_redis_killed_then_restarted(rig: Rig) -> None:
    """Redis SIGKILLed and restarted on its port and AOF: nothing acknowledged is lost."""

    async def fault() -> None:
        rig.stores.redis.kill()
        await asyncio.sleep(N)
        await asyncio.to_thread(rig.stores.redis.start)

    results = await under_load(rig.service, rig.seeded, fault)
    row = await make_row(f"redis SIGKILL, down {N:g} s, restart", results, rig.stores.postgres.url)
    check(row)


async def test_postgres_stopped_then_started(rig: Rig) -> None:
    """PostgreSQL stopped (immediate) for N s: verify keeps answering from Redis; scans wait."""
    down: list[float] = []

    async def fault() -> None:
        await asyncio.to_thread(rig.stores.postgres.stop_immediate)
        down.append(time.monotonic())
        await asyncio.sleep(N)
        down.append(time.monotonic())
        await asyncio.to_thread(rig.stores.postgres.start)

    results = await under_load(rig.service, rig.seeded, fault)
    row = await make_row(
        f"postgres stop -m immediate {N:g} s, start", results, rig.stores.postgres.url
    )
    check(row)
    during = [r for r in results if down[0] <= r.sent and r.done <= down[1]]
    assert during, "no request fell inside the outage"
    assert all(r.status == 200 for r in during), "verify must keep working from Redis"


async def test_both_stores_down_never_admits(rig: Rig) -> None:
    """Redis frozen and PostgreSQL stopped together: 503 unverified, never an admit."""
    blind: list[tuple[float, float]] = []

    async def fault() -> None:
        rig.stores.redis.signal(signal.SIGSTOP)
        await asyncio.to_thread(rig.stores.postgres.stop_immediate)
        start = time.monotonic()
        await asyncio.sleep(BOTH_DOWN)
        blind.append((start, time.monotonic()))
        await asyncio.to_thread(rig.stores.postgres.start)
        rig.stores.redis.signal(signal.SIGCONT)

    results = await under_load(rig.service, rig.seeded, fault)
    row = await make_row(
        f"redis SIGSTOP + postgres stop {BOTH_DOWN:g} s",
        results,
        rig.stores.postgres.url,
        blind=blind,
    )
    check(row)
    assert row.unverified > 0, "the outage never showed"
    start, end = blind[0]
    during = [r for r in results if start <= r.sent and r.done <= end]
    assert all(r.status in {503, None} for r in during), "both stores down must answer 503"


async def test_service_killed_then_restarted(rig: Rig) -> None:
    """The service SIGKILLed mid-load and restarted: every scan it acknowledged is stored."""

    async def fault() -> None:
        rig.service.signal(signal.SIGKILL)
        await asyncio.to_thread(rig.service.wait, 10)
        await asyncio.sleep(min(N, 2.0))
        await asyncio.to_thread(rig.service.start)

    results = await under_load(rig.service, rig.seeded, fault)
    row = await make_row("service SIGKILL, restart", results, rig.stores.postgres.url)
    check(row)


async def test_service_terminated_flushes_and_exits_zero(rig: Rig) -> None:
    """SIGTERM mid-load: every request sent before the signal is answered (those on open
    keep-alive connections too, with ``Connection: close``), the scan buffer is flushed to
    Postgres before exit (checked with no service left running), and the exit code is 0.

    "Sent" is the client's clock before its request is written, so a request counted as sent
    before the signal may reach the server after it: on a connection already open it is still
    answered (the server gives open connections a grace window). Requests after the signal on
    new connections are refused; none of those the server handled may go unanswered."""
    exit_codes: list[int] = []
    signalled: list[float] = []

    async def fault() -> None:
        signalled.append(time.monotonic())
        rig.service.signal(signal.SIGTERM)
        exit_codes.append(await asyncio.to_thread(rig.service.wait, 60))

    results = await under_load(rig.service, rig.seeded, fault)
    assert exit_codes == [0], rig.service.logs()
    row = await make_row("service SIGTERM (no restart)", results, rig.stores.postgres.url)
    before = [r for r in results if r.sent < signalled[0]]
    straddling = [r for r in before if r.done > signalled[0]]
    answered = [r for r in straddling if r.status == 200]
    dropped = [r for r in before if r.status is None]
    print(
        f"  sent before SIGTERM: {len(before)}, finished after it: {len(straddling)},"
        f" answered 200: {len(answered)}, unanswered: {len(dropped)}",
        flush=True,
    )
    check(row)
    assert answered, "no request was finished after the signal: shutdown did not wait"
    assert not dropped, f"{len(dropped)} requests sent before SIGTERM got no answer"
    assert len(answered) == len(straddling), "a request in flight at SIGTERM was not answered 200"
    unanswered = [uuid.UUID(r.scan_id) for r in results if r.status != 200]
    conn = await asyncpg.connect(rig.stores.postgres.url, timeout=5)
    try:
        handled = await conn.fetchval(
            "SELECT count(*) FROM scans WHERE scan_id = ANY($1::uuid[])", unanswered, timeout=10
        )
    finally:
        await conn.close()
    assert handled == 0, "a request the server handled never got its answer"


@pytest.fixture
async def redis_proxy(stores: Stores) -> AsyncIterator[SlowProxy]:
    proxy = SlowProxy("127.0.0.1", stores.redis.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def pg_proxy(stores: Stores) -> AsyncIterator[SlowProxy]:
    proxy = SlowProxy("127.0.0.1", stores.postgres.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_slow_network_to_redis(
    tmp_path: Path, stores: Stores, redis_proxy: SlowProxy
) -> None:
    """Every byte to and from Redis held 0.7 s (more than the Redis deadline), then the links
    dropped: no request waits past its budget, and no acknowledged scan is lost."""
    service, seeded = await _rig(tmp_path, stores, redis_url=redis_proxy.url(stores.redis.url))

    async def fault() -> None:
        redis_proxy.delay = 0.7
        await asyncio.sleep(N)
        redis_proxy.delay = 0.0
        await redis_proxy.drop()

    try:
        results = await under_load(service, seeded, fault)
    finally:
        await asyncio.to_thread(service.stop)
    row = await make_row(f"redis link +0.7 s/hop {N:g} s, drop", results, stores.postgres.url)
    check(row)


async def test_slow_network_to_postgres(
    tmp_path: Path, stores: Stores, pg_proxy: SlowProxy
) -> None:
    """Every byte to and from PostgreSQL held 0.4 s, then the links dropped: no request waits
    past its budget, and no acknowledged scan is lost."""
    service, seeded = await _rig(tmp_path, stores, database_url=pg_proxy.url(stores.postgres.url))

    async def fault() -> None:
        pg_proxy.delay = 0.4
        await asyncio.sleep(N)
        pg_proxy.delay = 0.0
        await pg_proxy.drop()

    try:
        results = await under_load(service, seeded, fault)
    finally:
        await asyncio.to_thread(service.stop)
    row = await make_row(f"postgres link +0.4 s/hop {N:g} s, drop", results, stores.postgres.url)
    check(row)
