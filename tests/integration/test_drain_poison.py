"""Issue 11, defect 1: no single stream entry stops the scan drain.

Poison entries are put straight into the Redis stream shards (every field of the record, every
kind of bad value), interleaved with good ones. The good scans reach PostgreSQL, the poison
ones land in ``scan_dead_letters`` with a reason, their stream entries are acknowledged and
deleted, and the drain goes on: in one pass, for a new consumer claiming a poisoned entry a
dead one left pending, and in the service's shutdown flush.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import DRAIN, POOL, SUPERVISOR
from passcode.store import deadletters, pg
from passcode.store import scans as scan_store
from passcode.store.cache import Cache
from passcode.store.scans import ScanRecord, insert_isolating
from passcode.store.scanstream import DRAIN_GROUP
from passcode.wiring import make_drain, open_cache
from tests.helpers import (
    POISON,
    Fields,
    far,
    good_entries,
    open_stores,
    parts,
    scan_id_of,
    stored_scan_ids,
)


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[tuple[pg.Pool, Cache]]:
    async with open_stores(settings, max_size=4) as made:
        yield made


async def put(
    redis: aioredis.Redis, cache: Cache, entries: list[tuple[str, Fields]]
) -> dict[str, tuple[str, str]]:
    """XADD each entry to a shard in turn; returns name → (stream, entry id)."""
    where: dict[str, tuple[str, str]] = {}
    streams = cache.stream_keys()
    for n, (name, fields) in enumerate(entries):
        stream = streams[n % len(streams)]
        entry_id = await redis.xadd(stream, fields)  # type: ignore[arg-type]
        where[name] = (stream, entry_id.decode())
    return where


async def dead_letters(
    pool: pg.Pool, cache: Cache
) -> dict[tuple[str, str], deadletters.KeptLetter]:
    """The dead letters of this test's streams (the run's database is shared)."""
    kept = await deadletters.page(pool, after_id=0, limit=100_000, timeout=5)
    mine = set(cache.stream_keys())
    return {(k.letter.stream, k.letter.entry_id): k for k in kept if k.letter.stream in mine}


async def stream_lengths(redis: aioredis.Redis, cache: Cache) -> int:
    return sum([await redis.xlen(s) for s in cache.stream_keys()])


async def assert_sorted_out(
    pool: pg.Pool,
    redis: aioredis.Redis,
    cache: Cache,
    good: list[tuple[str, Fields]],
    where: dict[str, tuple[str, str]],
) -> None:
    """Every good scan in Postgres, every poison entry a dead letter with a reason and its
    fields as Redis held them, and nothing left in the streams."""
    ids = [scan_id_of(fields) for _, fields in good]
    assert await stored_scan_ids(pool, ids) == set(ids)
    kept = await dead_letters(pool, cache)
    for name, fields in POISON:
        letter = kept.get(where[name])
        assert letter is not None, f"{name} is not a dead letter"
        assert letter.letter.reason, name
        assert letter.letter.fields == tuple(p for pair in fields.items() for p in pair), name
    assert len(kept) == len(POISON)
    assert await stream_lengths(redis, cache) == 0


async def test_poison_entries_become_dead_letters_and_the_good_ones_are_stored(
    settings: Settings, stores: tuple[pg.Pool, Cache], raw_redis: aioredis.Redis
) -> None:
    """One of each kind of bad entry between good ones on every shard: one drain_all stores
    the good scans, keeps each bad entry as a dead letter (with a reason, fields verbatim,
    non-UTF-8 bytes included), acknowledges and deletes them all, and counts them. Good scans
    put after the poison are stored by the next pass: the drain goes on."""
    pool, cache = stores
    drain = make_drain(settings, pool, cache)
    await drain.ensure_groups()
    good = good_entries(24)
    mixed = [e for pair in zip(good, POISON, strict=False) for e in pair] + POISON[len(good) :]
    where = await put(raw_redis, cache, mixed)
    await drain.drain_all()
    await assert_sorted_out(pool, raw_redis, cache, good, where)
    assert drain.dead_lettered == len(POISON)
    assert drain.stored == len(good)
    later = good_entries(8)
    await put(raw_redis, cache, later)
    assert await drain.drain_all() == len(later)
    ids = [scan_id_of(fields) for _, fields in later]
    assert await stored_scan_ids(pool, ids) == set(ids)
    reasons = {
        name: (await dead_letters(pool, cache))[where[name]].letter.reason for name, _ in POISON
    }
    assert "outside the range" in reasons["terminal time 9999 -23:59"]
    assert "outside the range" in reasons["ms from 2200"]


async def test_a_new_consumer_claiming_a_poisoned_pending_entry_goes_on(
    settings: Settings, stores: tuple[pg.Pool, Cache], raw_redis: aioredis.Redis
) -> None:
    """After a restart: a consumer that died holding poison and good entries pending (read,
    never acknowledged) leaves them idle; a new drain claims them, keeps the poison as dead
    letters and stores the rest, and good scans added later reach Postgres too."""
    pool, cache = stores
    await make_drain(settings, pool, cache).ensure_groups()
    good = good_entries(8)
    where = await put(raw_redis, cache, [*POISON, *good])
    for stream in cache.stream_keys():  # the dead consumer's read
        await raw_redis.xreadgroup(DRAIN_GROUP, "dead-consumer", {stream: ">"}, count=1000)
    pending = sum(
        [(await raw_redis.xpending(s, DRAIN_GROUP))["pending"] for s in cache.stream_keys()]
    )
    assert pending == len(POISON) + len(good)
    restarted = dataclasses.replace(settings, drain_claim_idle=0.0)
    drain = make_drain(restarted, pool, cache)
    await drain.drain_all()
    await assert_sorted_out(pool, raw_redis, cache, good, where)
    for stream in cache.stream_keys():
        assert (await raw_redis.xpending(stream, DRAIN_GROUP))["pending"] == 0


async def test_an_entry_postgres_refuses_after_decoding_is_found_by_splitting(
    settings: Settings,
    stores: tuple[pg.Pool, Cache],
    raw_redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should a bad value pass the decoder's checks (here: the scan time's range widened, so a
    scan at 9999-12-31 makes its day partition's bound overflow in the insert), the batch is
    stored in halves down to the one entry that fails: that one is a dead letter with the
    error, every other scan of the batch is stored."""
    pool, cache = stores
    monkeypatch.setattr(scan_store, "SCAN_TIME_RANGE_MS", (0, 2**62))
    drain = make_drain(dataclasses.replace(settings, scan_shards=1), pool, cache)
    await drain.ensure_groups()
    late = datetime(9999, 12, 31, 12, tzinfo=UTC)
    bad = parts(at_ms=str(int(late.timestamp() * 1000)))
    good = good_entries(21)
    entries = [*good[:13], ("late", {b"r": bad.encode()}), *good[13:]]
    where = await put(raw_redis, cache, entries)
    assert await drain.drain_all() == len(entries)
    ids = [scan_id_of(fields) for _, fields in good]
    assert await stored_scan_ids(pool, ids) == set(ids)
    kept = await dead_letters(pool, cache)
    assert list(kept) == [where["late"]]
    assert kept[where["late"]].letter.reason.startswith("OverflowError")
    assert drain.dead_lettered == 1


async def test_insert_isolating_returns_exactly_the_rows_postgres_or_asyncpg_refuse(
    stores: tuple[pg.Pool, Cache],
) -> None:
    """The store's splitting insert, with rows built by hand past the decoder: a terminal time
    UTC cannot hold, a scan id that is no UUID and a subject that is no bytes are returned by
    index with the error; the seven good rows are stored."""
    pool, _ = stores
    at = datetime.now(UTC)

    def row(**changes: Any) -> ScanRecord:
        base: dict[str, Any] = {
            "scanned_at": at,
            "scan_id": str(uuid.uuid4()),
            "terminal_time": None,
            "terminal_id": str(uuid.uuid4()),
            "place": "Isolation",
            "subject_id": None,
            "decision": "invalid",
            "reason": "malformed",
            "color": None,
            "replay": False,
            "kind": "passcode",
            "issuer": None,
            "cert_hash": None,
        }
        base.update(changes)
        return tuple(base.values())  # type: ignore[return-value]

    overflow = datetime(9999, 12, 31, 23, 59, 59, tzinfo=far)
    records = [row() for _ in range(7)]
    records[1:1] = [row(terminal_time=overflow)]
    records[5:5] = [row(scan_id="zz")]
    records.append(row(subject_id="text"))
    failed = await insert_isolating(pool, records, timeout=5, dedupe_window=60)
    assert sorted(failed) == [1, 5, 9]
    assert failed[1].startswith("OverflowError")
    assert failed[5].startswith("ValueError")
    assert failed[9].startswith("TypeError")
    good_ids = [r[1] for n, r in enumerate(records) if n not in failed]
    assert await stored_scan_ids(pool, good_ids) == set(good_ids)


async def test_if_postgres_cannot_keep_a_dead_letter_the_entry_stays_pending(
    settings: Settings, stores: tuple[pg.Pool, Cache], raw_redis: aioredis.Redis
) -> None:
    """Never lose: when the dead letter cannot be written (here its table is away), the pass
    fails and the poison entry stays in the stream, pending, not acknowledged; once Postgres
    takes it, the next pass keeps it as a dead letter."""
    pool, cache = stores
    drain = make_drain(dataclasses.replace(settings, scan_shards=1), pool, cache)
    await drain.ensure_groups()
    where = await put(raw_redis, cache, [POISON[0]])
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE scan_dead_letters RENAME TO scan_dead_letters_away")
    try:
        with pytest.raises(Exception, match="scan_dead_letters"):
            await drain.drain_once()
        assert await stream_lengths(raw_redis, cache) == 1
    finally:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE scan_dead_letters_away RENAME TO scan_dead_letters")
    await drain.drain_all()
    assert list(await dead_letters(pool, cache)) == [where[POISON[0][0]]]
    assert await stream_lengths(raw_redis, cache) == 0


async def test_the_running_service_drains_past_poison_and_its_shutdown_flush_too(
    aiohttp_client: Callable[..., Awaitable[Any]],
    settings: Settings,
    raw_redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service's own drain task meets poison and goes on (no task failure, nothing at
    ERROR); then, its loop waiting an hour between passes, entries put before shutdown are
    flushed by the shutdown path (drain_all in the cleanup): good ones stored, poison kept,
    and the shutdown raises nothing."""
    client = await aiohttp_client(create_app(settings))
    pool, cache = client.app[POOL], open_cache(settings)
    try:
        good = good_entries(8)
        where = await put(raw_redis, cache, [*POISON[:10], *good])
        ids = [scan_id_of(fields) for _, fields in good]
        async with asyncio.timeout(15):
            while True:
                if await stored_scan_ids(pool, ids) == set(ids):
                    break
                await asyncio.sleep(0.05)
        assert client.app[SUPERVISOR].failing() == []
        assert all(t["failures"] == 0 for t in client.app[SUPERVISOR].health().values())
        ready = await (await client.get("/readyz")).json()
        assert ready["status"] == "ok"
        assert ready["dead_letters"] == 10
        assert {"scan-drain", "status-sync", "retention", "key-reload"} <= set(ready["tasks"])
        await client.close()

        slow = await aiohttp_client(create_app(dataclasses.replace(settings, drain_interval=3600)))
        async with asyncio.timeout(15):  # its first, idle pass done: it waits an hour now
            while True:
                if not await stream_lengths(raw_redis, cache):
                    break
                await asyncio.sleep(0.05)
        good = good_entries(8)
        where.update(await put(raw_redis, cache, [*POISON[10:], *good]))
        pool = await pg.create_pool(settings.database_url or "", timeout=5, min_size=1, max_size=2)
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO):
                await slow.close()
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert "drained" in caplog.text
            await assert_sorted_out(pool, raw_redis, cache, good, where)
        finally:
            await pool.close()
    finally:
        await cache.close()
    assert slow.app[DRAIN].dead_lettered == len(POISON) - 10
