"""The scan stream's reading side (passcode/store/scanstream.py) on the real Redis: consumer
groups, taking entries (own pending first, then claimed from a dead consumer, then new ones, as
Redis sent them), acknowledging, the backlog and its oldest entry, and every failure as
StoreUnavailable."""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis

from passcode.config import Settings
from passcode.errors import StoreUnavailable
from passcode.store import scanstream
from passcode.store.cache import Cache
from passcode.store.scanstream import DRAIN_GROUP
from passcode.wiring import open_cache


async def take(
    cache: Cache, stream: str, consumer: str = "me", *, claim_idle_ms: int = 60_000
) -> list[scanstream.Entry]:
    return await scanstream.take(
        cache, stream, consumer=consumer, count=100, claim_idle_ms=claim_idle_ms
    )


async def test_groups_are_made_on_every_shard_once(cache: Cache, raw_redis: aioredis.Redis) -> None:
    """create_groups makes the drain's group (and the stream) on every shard; run again (a
    second process, a restart) it keeps the groups as they are, with their pending entries."""
    await scanstream.create_groups(cache)
    stream = cache.stream_key(0)
    await raw_redis.xadd(stream, {"r": "one"})
    assert len(await take(cache, stream)) == 1
    await scanstream.create_groups(cache)
    for key in cache.stream_keys():
        groups = await raw_redis.xinfo_groups(key)
        assert [g["name"] for g in groups] == [DRAIN_GROUP.encode()]
    assert (await raw_redis.xpending(stream, DRAIN_GROUP))["pending"] == 1


async def test_a_group_refused_for_another_reason_is_store_unavailable(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """Only BUSYGROUP (the group exists) is taken as done: a shard key holding another type
    (WRONGTYPE) fails the call."""
    await raw_redis.set(cache.stream_key(1), "not a stream")
    with pytest.raises(StoreUnavailable):
        await scanstream.create_groups(cache)


async def test_taken_entries_stay_pending_until_acknowledged(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """New entries come as Redis sent them (id, flat fields); taken again before they are
    acknowledged, the same entries come back (own pending first); acknowledged, they are gone
    from the group and from the stream."""
    await scanstream.create_groups(cache)
    stream = cache.stream_key(2)
    ids = [await raw_redis.xadd(stream, {"r": f"scan-{n}", "sc": "g"}) for n in range(3)]
    first = await take(cache, stream)
    assert [(entry_id, list(fields or ())) for entry_id, fields in first] == [
        (ids[n], [b"r", f"scan-{n}".encode(), b"sc", b"g"]) for n in range(3)
    ]
    again = await take(cache, stream)
    assert [entry_id for entry_id, _ in again] == ids
    await scanstream.acknowledge(cache, stream, ids[:2])
    assert [entry_id for entry_id, _ in await take(cache, stream)] == ids[2:]
    assert await raw_redis.xlen(stream) == 1
    await scanstream.acknowledge(cache, stream, ids[2:])
    assert await take(cache, stream) == []
    assert (await raw_redis.xpending(stream, DRAIN_GROUP))["pending"] == 0
    assert await raw_redis.xlen(stream) == 0


async def test_entries_a_dead_consumer_left_are_claimed_and_deleted_ones_skipped(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """Entries delivered to a consumer that went away are claimed once idle long enough; one
    deleted since it was delivered is not handed out as an entry to store."""
    await scanstream.create_groups(cache)
    stream = cache.stream_key(3)
    kept = await raw_redis.xadd(stream, {"r": "kept"})
    gone = await raw_redis.xadd(stream, {"r": "gone"})
    await raw_redis.xreadgroup(DRAIN_GROUP, "dead", {stream: ">"}, count=10)
    await raw_redis.xdel(stream, gone)
    assert await take(cache, stream, "alive") == []  # not idle long enough: left to "dead"
    claimed = await take(cache, stream, "alive", claim_idle_ms=0)
    assert [(entry_id, list(fields or ())) for entry_id, fields in claimed] == [
        (kept, [b"r", b"kept"])
    ]


async def test_an_own_entry_deleted_after_delivery_comes_without_fields(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """An entry this consumer took and that was deleted since comes back with no fields (the
    drain only acknowledges it), and acknowledging it empties the group."""
    await scanstream.create_groups(cache)
    stream = cache.stream_key(0)
    entry_id = await raw_redis.xadd(stream, {"r": "x"})
    assert len(await take(cache, stream)) == 1
    await raw_redis.xdel(stream, entry_id)
    assert [(i, fields) for i, fields in await take(cache, stream)] == [(entry_id, None)]
    await scanstream.acknowledge(cache, stream, [entry_id])
    assert (await raw_redis.xpending(stream, DRAIN_GROUP))["pending"] == 0


async def test_backlog_and_its_oldest_entry_span_every_shard(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """Nothing in the streams: no oldest entry and a backlog of 0. Entries on two shards: the
    oldest is the smallest id's time (ms) across all shards, the backlog their count."""
    assert await scanstream.oldest_entry_ms(cache) is None
    assert await scanstream.backlog(cache) == 0
    await raw_redis.xadd(cache.stream_key(3), {"r": "a"}, id="2000-0")
    await raw_redis.xadd(cache.stream_key(1), {"r": "b"}, id="1500-3")
    await raw_redis.xadd(cache.stream_key(1), {"r": "c"}, id="2500-0")
    assert await scanstream.oldest_entry_ms(cache) == 1500
    assert await scanstream.backlog(cache) == 3


async def test_acknowledging_nothing_sends_nothing(cache: Cache) -> None:
    """An empty batch has nothing to acknowledge (XACK without ids is a syntax error)."""
    await scanstream.acknowledge(cache, cache.stream_key(0), [])


async def test_every_operation_fails_as_store_unavailable_when_redis_is_gone(
    settings: Settings,
) -> None:
    """Nothing listening: each operation raises StoreUnavailable within its deadline, none
    redis-py's own errors."""
    gone = open_cache(
        dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", redis_cluster_nodes=())
    )
    stream = gone.stream_key(0)
    try:
        for call in (
            scanstream.create_groups(gone),
            scanstream.take(gone, stream, consumer="me", count=1, claim_idle_ms=0),
            scanstream.acknowledge(gone, stream, [b"1-0"]),
            scanstream.oldest_entry_ms(gone),
            scanstream.backlog(gone),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await gone.close()
