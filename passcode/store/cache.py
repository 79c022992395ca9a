"""Redis: the hot copy of every subject's status, and the sharded scan stream.

Key layout (DESIGN §6): every key one operation touches together carries the same hash tag,
the subject's shard, so the verify script stays legal on Redis Cluster::

    {prefix}:{<shard>}:st:<subject hex>    hash: c colour ("" = none), v version,
                                            u valid-until (unix s), n masked name
    {prefix}:{<shard>}:scans               stream of scan records
    {prefix}:{<shard>}:sid:<scan id>       marks a scan id already recorded (retry safety)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from passcode.domain.model import Color
from passcode.errors import StoreUnavailable

log = logging.getLogger(__name__)

DRAIN_GROUP = "drain"

# KEYS: status, stream, dedupe.  ARGV: now (s), pass version, dedupe ttl, scan field/values…
# Reads the live status and, when it is fresh enough to decide on, appends the scan with a
# snapshot of that status in the same round trip. Returns nil when the caller must go to
# Postgres (missing, expired, or older than the pass), without appending anything.
_VERIFY_LUA = """
local st = redis.call('HMGET', KEYS[1], 'c', 'v', 'u', 'n')
if not st[2] then return nil end
if tonumber(st[3]) < tonumber(ARGV[1]) or tonumber(ARGV[2]) > tonumber(st[2]) then
  return nil
end
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('XADD', KEYS[2], '*', 'sc', st[1], 'sv', st[2], unpack(ARGV, 4))
end
return st
"""

# KEYS: stream, dedupe.  ARGV: dedupe ttl, scan field/values…  Appends once per scan id.
_APPEND_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
  return 1
end
return 0
"""

# KEYS: status.  ARGV: version, colour, valid-until, masked name.  Never moves a version back.
_PUT_STATUS_LUA = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', ARGV[2], 'u', ARGV[3], 'n', ARGV[4])
return 1
"""


class LayoutMismatchError(RuntimeError):
    """The configured key layout differs from the one the data in Redis was written with."""


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """A subject's status as cached: colour (None = no valid status), version, expiry, name."""

    color: Color | None
    version: int
    valid_until: int
    holder: str

    @classmethod
    def from_fields(cls, fields: Sequence[bytes]) -> LiveStatus:
        color_raw, version, until, name = fields
        return cls(
            color=Color(color_raw.decode()) if color_raw else None,
            version=int(version),
            valid_until=int(until),
            holder=name.decode(),
        )


def create_client(url: str, *, timeout: float, max_connections: int) -> aioredis.Redis:
    """A client that fails within ``timeout`` instead of redis-py's minute of retries."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_timeout=False,
        max_connections=max_connections,
        health_check_interval=0,
        decode_responses=False,
        protocol=2,
    )


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Turn every Redis failure (and a missed deadline) into :class:`StoreUnavailable`."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis unavailable during %s: %s", what, type(exc).__name__)
        raise StoreUnavailable(f"cache unavailable ({what})") from exc


class Cache:
    """Status cache and scan stream over one Redis client, every call under a deadline."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, shards: int, timeout: float, dedupe_ttl: int
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = shards
        self.timeout = timeout
        self.dedupe_ttl = dedupe_ttl
        self._verify = client.register_script(_VERIFY_LUA)
        self._append = client.register_script(_APPEND_LUA)
        self._put_status = client.register_script(_PUT_STATUS_LUA)

    def shard_of(self, key: bytes) -> int:
        """Subjects and scan ids are random, so their first bytes spread evenly."""
        return int.from_bytes(key[:4], "big") % self.shards

    def status_key(self, subject: bytes) -> str:
        return f"{self.prefix}:{{{self.shard_of(subject)}}}:st:{subject.hex()}"

    def stream_key(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:scans"

    def dedupe_key(self, shard: int, scan_id: str) -> str:
        return f"{self.prefix}:{{{shard}}}:sid:{scan_id}"

    def stream_keys(self) -> list[str]:
        return [self.stream_key(shard) for shard in range(self.shards)]

    async def verify_and_record(
        self, subject: bytes, *, now: int, pass_version: int, scan_id: str, fields: list[str]
    ) -> LiveStatus | None:
        """One round trip: live status plus the scan appended with its snapshot, or None."""
        shard = self.shard_of(subject)
        with redis_errors("verify"):
            async with asyncio.timeout(self.timeout):
                found = await self._verify(
                    keys=[
                        self.status_key(subject),
                        self.stream_key(shard),
                        self.dedupe_key(shard, scan_id),
                    ],
                    args=[now, pass_version, self.dedupe_ttl, *fields],
                )
        return None if found is None else LiveStatus.from_fields(found)

    async def record(self, shard_key: bytes, scan_id: str, fields: list[str]) -> bool:
        """Append a scan whose decision is already known; False when the scan id was seen."""
        shard = self.shard_of(shard_key)
        with redis_errors("record scan"):
            async with asyncio.timeout(self.timeout):
                added = await self._append(
                    keys=[self.stream_key(shard), self.dedupe_key(shard, scan_id)],
                    args=[self.dedupe_ttl, *fields],
                )
        return bool(added)

    async def get_status(self, subject: bytes) -> LiveStatus | None:
        with redis_errors("read status"):
            async with asyncio.timeout(self.timeout):
                found = await self.client.hmget(self.status_key(subject), ["c", "v", "u", "n"])
        if found[1] is None:
            return None
        return LiveStatus.from_fields(cast("list[bytes]", found))

    async def put_status(self, subject: bytes, status: LiveStatus) -> None:
        color = "" if status.color is None else status.color.value
        with redis_errors("write status"):
            async with asyncio.timeout(self.timeout):
                await self._put_status(
                    keys=[self.status_key(subject)],
                    args=[status.version, color, status.valid_until, status.holder],
                )

    async def check_layout(self) -> None:
        """Refuse to run with another shard count than the data was written with.

        The shard is part of every key, so two processes disagreeing on it would read and write
        different status keys for the same subject (a CLI override the service never sees).
        """
        key = f"{self.prefix}:layout:shards"
        with redis_errors("check layout"):
            async with asyncio.timeout(self.timeout):
                await self.client.set(key, self.shards, nx=True)
                stored = await self.client.get(key)
        if stored is not None and int(stored) != self.shards:
            raise LayoutMismatchError(
                f"Redis under prefix {self.prefix!r} was written with {int(stored)} scan shards;"
                f" set PASSCODE_SCAN_SHARDS={int(stored)}"
            )

    async def ping(self) -> None:
        with redis_errors("ping"):
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
