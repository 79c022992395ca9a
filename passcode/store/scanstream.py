"""The scan stream: the sharded Redis Streams the verify path appends to and the drain empties.

The verify script appends (:mod:`passcode.store.cache`, which owns the key layout); these are the
reading side's operations, each a pipeline of its own on the transport under a deadline, every
failure :class:`~passcode.errors.StoreUnavailable`. Replies stay as Redis sent them: redis-py
would turn every entry into a dict, and those dicts (and the collector passes they caused) were
a third of the drain's CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from passcode.store.cache import Cache
from passcode.store.transport import ResponseError, redis_errors

DRAIN_GROUP = "drain"

# (entry id, fields as Redis sent them: name, value, name, value, ...); fields are None for an
# entry deleted after it was delivered. A two-item list on the wire, unpacked like the pair.
Entry = tuple[bytes, Sequence[bytes] | None]

DEADLINE = 4  # × the Redis timeout: a batch of thousands of entries takes longer than a verify


async def create_groups(cache: Cache) -> None:
    """The drain's consumer group on every shard (the stream made if missing, read from its
    start); a group that exists is kept as it is."""
    commands = [
        (("XGROUP", "CREATE", stream, DRAIN_GROUP, "0", "MKSTREAM"), stream)
        for stream in cache.stream_keys()
    ]
    with redis_errors("create consumer group"):
        replies = await cache.transport.execute(
            commands, timeout=cache.timeout * DEADLINE, raise_errors=False, durable=False
        )
        for reply in replies:
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                raise reply


async def take(
    cache: Cache, stream: str, *, consumer: str, count: int, claim_idle_ms: int
) -> list[Entry]:
    """Up to ``count`` entries of one shard for ``consumer``: its own unacknowledged ones first,
    then ones a dead consumer left idle ``claim_idle_ms``, then new ones. They stay pending in
    the group until :func:`acknowledge`."""
    execute, key = cache.transport.execute, stream
    timeout = cache.timeout * DEADLINE
    read = ("XREADGROUP", "GROUP", DRAIN_GROUP, consumer, "COUNT", count, "STREAMS", stream)
    with redis_errors("read scans"):
        (mine,) = await execute([((*read, "0"), key)], timeout=timeout, durable=False)
        entries: list[Entry] = mine[0][1] if mine else []
        if not entries:
            claim = ("XAUTOCLAIM", stream, DRAIN_GROUP, consumer, claim_idle_ms, "0-0")
            (claimed,) = await execute(
                [((*claim, "COUNT", count), key)], timeout=timeout, durable=False
            )
            # Redis 6.2 answers a claimed entry deleted since with nil: it is ours now, and
            # the read of our own entries above acknowledges it next time.
            entries = [entry for entry in claimed[1] if entry is not None]
        if not entries:
            (fresh,) = await execute([((*read, ">"), key)], timeout=timeout, durable=False)
            entries = fresh[0][1] if fresh else []
    return entries


async def acknowledge(cache: Cache, stream: str, ids: Sequence[bytes]) -> None:
    """Acknowledge entries of one shard and delete them from the stream, in one round trip."""
    if not ids:
        return
    commands = [(("XACK", stream, DRAIN_GROUP, *ids), stream), (("XDEL", stream, *ids), stream)]
    with redis_errors("ack scans"):
        await cache.transport.execute(commands, timeout=cache.timeout * DEADLINE, durable=False)


async def oldest_entry_ms(cache: Cache) -> int | None:
    """The Redis time (ms, from its id) of the oldest entry still in any shard, or None."""
    commands = [
        (("XRANGE", stream, "-", "+", "COUNT", 1), stream) for stream in cache.stream_keys()
    ]
    with redis_errors("scan log backlog"):
        replies = await cache.transport.execute(
            commands, timeout=cache.timeout * DEADLINE, durable=False
        )
    firsts = [int(entries[0][0].split(b"-", 1)[0]) for entries in replies if entries]
    return min(firsts, default=None)


async def backlog(cache: Cache) -> int:
    """How many entries the shards hold (stored entries are deleted, so: not yet stored)."""
    commands = [(("XLEN", stream), stream) for stream in cache.stream_keys()]
    with redis_errors("scan log backlog"):
        replies = await cache.transport.execute(
            commands, timeout=cache.timeout * DEADLINE, durable=False
        )
    return sum(cast("list[int]", replies))


async def shard_backlogs(cache: Cache, *, timeout: float) -> list[tuple[int, int, int | None]]:
    """Per shard: (shard, entries held, Redis time in ms of its oldest entry or None), in one
    pipeline within ``timeout`` (``GET /metrics`` reads it when scraped)."""
    streams = cache.stream_keys()
    commands: list[tuple[tuple[str | int, ...], str]] = []
    for stream in streams:
        commands += [(("XLEN", stream), stream), (("XRANGE", stream, "-", "+", "COUNT", 1), stream)]
    with redis_errors("scan log backlog"):
        replies = await cache.transport.execute(commands, timeout=timeout, durable=False)
    found = []
    for shard in range(len(streams)):
        length, first = cast("int", replies[2 * shard]), replies[2 * shard + 1]
        oldest = int(first[0][0].split(b"-", 1)[0]) if first else None
        found.append((shard, length, oldest))
    return found
