"""Redis: the hot copy of every subject's status, and the sharded scan stream.

Key layout (DESIGN §6): every key one operation touches together carries the same hash tag,
the subject's shard, so the verify script stays legal on Redis Cluster::

    {prefix}:{<shard>}:st:<subject hex>    hash: c colour ("" = none), v version,
                                            u valid-until (unix s), n masked name
    {prefix}:{<shard>}:scans               stream of scan records
    {prefix}:{<shard>}:sid:<scan id>       marks a scan id already recorded (retry safety)
    {prefix}:{<shard>}:rp:<token id hex>   the place a pass was last scanned at (replay
                                            window; shard of the pass's subject)
    {prefix}:{<shard>}:rl:t:<terminal id>  GCRA rate limit of a terminal (string: TAT, ms)
    {prefix}:{<shard>}:rl:c:<user hash>    GCRA rate limit of a citizen (hex user hash)

A rate-limit key is alone in its script call; its shard is that of the terminal id's or the
user hash's bytes, so the keys spread over the cluster like the statuses do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from passcode.domain.status import LiveStatus
from passcode.errors import StoreUnavailable

log = logging.getLogger(__name__)

DRAIN_GROUP = "drain"

# KEYS: status, stream, dedupe, last place.  ARGV: now (s), pass version, dedupe ttl, scan
# record, place, replay window (s).
# Reads the live status and, when it may decide (passcode.domain.status.decides, spelled in
# Lua: the property test in tests/integration/test_status_script.py holds the two to one
# answer), appends the scan with a snapshot of that status in the same round trip. Returns nil when the caller must go to
# Postgres (missing, expired, or older than the pass), without appending anything; else the
# status fields and a fifth, the replay flag ('1' or '0'). Replay: the pass's last place is kept
# for the window; a scan at another place within it is flagged ('rp' in the entry, added only
# then), never refused. A retried scan id changes nothing and is not flagged again.
_VERIFY_LUA = """
local st = redis.call('HMGET', KEYS[1], 'c', 'v', 'u', 'n')
if not st[2] then return nil end
if tonumber(st[3]) <= tonumber(ARGV[1]) or tonumber(ARGV[2]) > tonumber(st[2]) then
  return nil
end
st[5] = '0'
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  local prev = redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6], 'GET')
  if prev and prev ~= ARGV[5] then
    st[5] = '1'
    redis.call('XADD', KEYS[2], '*', 'sc', st[1], 'sv', st[2], 'r', ARGV[4], 'rp', '1')
  else
    redis.call('XADD', KEYS[2], '*', 'sc', st[1], 'sv', st[2], 'r', ARGV[4])
  end
end
return st
"""

# KEYS: stream, dedupe.  ARGV: dedupe ttl, scan record.  Appends once per scan id.
_APPEND_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[2])
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


# KEYS: limit.  ARGV: now (ms), emission interval (ms per unit), tolerance (ms, burst ×
# interval), cost (units).  GCRA: the key holds the theoretical arrival time (TAT). Returns
# {1, new TAT} when allowed (and stores it), {0, TAT} when not (nothing written); the TAT comes
# back as a string (Lua numbers would be truncated to integers), so the caller can tell when the
# next request could pass without asking again.
_GCRA_LUA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local new = tat + interval * tonumber(ARGV[4])
if new - tonumber(ARGV[3]) > now then
  return {0, string.format('%.3f', tat)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
return {1, string.format('%.3f', new)}
"""


KEPT_CONNECTIONS = 8  # a batch in flight per event-loop turn; more than 8 at once is rare


class _Batcher:
    """Sends the commands callers submit in the same event-loop turn as one pipeline.

    Each command is still one script call with its own result (the verify path stays one
    round trip); many of them share a write, a read and redis-py's per-call bookkeeping, which
    at thousands of scans a second costs more than the commands themselves.
    """

    def __init__(self, client: aioredis.Redis, *, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._pending: list[tuple[tuple[object, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        # Connections kept between batches: redis-py's pool takes a lock, records metrics,
        # dispatches an event and probes the socket on every get and release, which per
        # batch cost more than the batch's own write. Only whole, fully read ones are kept;
        # they count as in use in the pool, whose disconnect (the client's close) closes them.
        self._idle: list[Any] = []

    def submit(self, command: tuple[object, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _connection(self) -> Any:
        """A kept connection still open with nothing unread (Redis may have closed it since:
        then it goes back to the pool, which reconnects), or one from the pool."""
        pool = self.client.connection_pool
        while self._idle:
            connection = self._idle.pop()
            reader = connection._reader  # redis-py has no public "closed or unread" check
            if reader is not None and not reader.at_eof() and not reader._buffer:
                return connection
            await connection.disconnect(nowait=True)
            await pool.release(connection)
        return await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py

    async def _send(self, batch: list[tuple[tuple[object, ...], asyncio.Future[Any]]]) -> None:
        """Write every command at once on one pooled connection, then read the replies in order.

        Lighter than redis-py's ``Pipeline`` (no command stack, no per-command callbacks). An
        error reply belongs to its own command only; anything else (Redis gone, the deadline)
        fails the whole batch and the connection is dropped, never returned half-read.
        """
        pool = self.client.connection_pool
        connection = None
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._connection()
                await connection.send_packed_command(_pack(batch), check_health=False)
                await _deliver(connection, batch)
        except BaseException as exc:
            # Whatever ends the send (Redis down, the deadline, an argument that cannot be
            # encoded, this task cancelled at shutdown) must wake every caller: batched calls
            # have no deadline of their own, so a future left pending would wait forever.
            if connection is not None:
                await connection.disconnect(nowait=True)
                await pool.release(connection)
            for _, future in batch:
                if not future.done():
                    future.set_exception(ConnectionError(f"redis batch failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, (RedisError, OSError, TimeoutError)):
                log.error("redis batch failed unexpectedly", exc_info=exc)
        else:
            if len(self._idle) < KEPT_CONNECTIONS:
                self._idle.append(connection)
            else:
                await pool.release(connection)


def _pack(batch: list[tuple[tuple[object, ...], asyncio.Future[Any]]]) -> bytes:
    """The batch as one RESP write, packed by hiredis (C); every submitter spells a command as
    separate words ("SCRIPT", "LOAD"), which is all :class:`_HiredisPacking` adds."""
    pack = hiredis.pack_command
    try:
        return b"".join([pack(command) for command, _ in batch])  # type: ignore[arg-type]  # stub: 1-tuple
    except TypeError as exc:  # an argument hiredis cannot encode: redis-py's error for it
        raise DataError(str(exc)) from exc


async def _deliver(
    connection: Any, batch: list[tuple[tuple[object, ...], asyncio.Future[Any]]]
) -> None:
    """Read one reply per command, in order; an error reply goes to its own caller only.

    Straight from the connection's hiredis reader: redis-py's ``read_response`` adds three
    coroutine levels and a timeout context per reply, and the batch already has its deadline.
    """
    parser = connection._parser
    reader, stream = getattr(parser, "_reader", None), getattr(parser, "_stream", None)
    if not isinstance(parser, _AsyncHiredisParser) or reader is None or stream is None:
        await _deliver_slowly(connection, batch)
        return
    for _, future in batch:
        result = reader.gets()
        while result is NOT_ENOUGH_DATA:
            data = await stream.read(_READ_SIZE)
            if not data:
                raise ConnectionError("redis closed the connection")
            reader.feed(data)
            result = reader.gets()
        if isinstance(result, RedisConnectionError):
            raise result
        if future.done():  # the caller gave up (its deadline passed)
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


_READ_SIZE = 65536


async def _deliver_slowly(
    connection: Any, batch: list[tuple[tuple[object, ...], asyncio.Future[Any]]]
) -> None:
    """:func:`_deliver` through redis-py's own reading (a parser other than hiredis)."""
    for _, future in batch:
        try:
            result: Any = await connection.read_response()
        except ResponseError as error:
            result = error
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


class _Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT; ``keys`` count fixed per script.

    Lighter than redis-py's ``AsyncScript`` on the hot path, which re-checks its client's type
    with a ``typing.Protocol`` ``isinstance`` on every call.
    """

    def __init__(self, client: aioredis.Redis, source: str, batcher: _Batcher) -> None:
        self.client = client
        self.source = source
        self.batcher = batcher
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.numkeys = _numkeys(source)

    def submit(self, *keys_and_args: object) -> asyncio.Future[Any]:
        """Queue the call in this event-loop turn's batch; NOSCRIPT is the caller's to handle."""
        return self.batcher.submit(("EVALSHA", self.sha, self.numkeys, *keys_and_args))

    async def __call__(self, *keys_and_args: object) -> Any:
        command = ("EVALSHA", self.sha, self.numkeys, *keys_and_args)
        try:
            return await self.batcher.submit(command)
        except NoScriptError:
            return await self.load_and_retry(command)

    async def load_and_retry(self, command: tuple[object, ...]) -> Any:
        """After NOSCRIPT: load the script, then send ``command`` again.

        Batched too: after a SCRIPT FLUSH or a restart every caller of a pipeline gets
        NOSCRIPT at once; one pipeline of loads (under its deadline) instead of a connection
        each, which would exhaust the pool and push them all to Postgres.
        """
        await self.batcher.submit(("SCRIPT", "LOAD", self.source))
        return await self.batcher.submit(command)


def _numkeys(source: str) -> int:
    """The number of KEYS a script uses: the highest ``KEYS[n]`` it mentions."""
    return max(int(n) for n in re.findall(r"KEYS\[(\d+)\]", source))


def _consume(future: asyncio.Future[Any]) -> None:
    """Done callback of a call nobody awaits: retrieve its outcome so none is reported lost."""
    if not future.cancelled():
        future.exception()


class LayoutMismatchError(RuntimeError):
    """The configured key layout differs from the one the data in Redis was written with."""


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python packer.

    redis-py's asyncio connections always pack in Python; on the verify path that was about a
    tenth of the service's CPU. Same wire bytes, same arguments accepted.
    """

    def pack_command(self, *args: str | int | float | bytes) -> list[bytes]:
        first = args[0].encode() if isinstance(args[0], str) else args[0]
        if isinstance(first, bytes) and b" " in first:  # "XGROUP CREATE": words go separately
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # stub wants 1-tuple
        except TypeError as exc:
            raise DataError(str(exc)) from exc


def create_client(url: str, *, timeout: float, max_connections: int) -> aioredis.Redis:
    """A client that fails within ``timeout`` instead of redis-py's minute of retries.

    Connecting has its own timeout; every command runs under ``asyncio.timeout`` in
    :class:`Cache` (redis-py's ``socket_timeout`` would add an ``asyncio.wait_for`` task to
    every write on the hot path for the same effect), and a cancelled read drops its connection.
    """
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_timeout=False,
        max_connections=max_connections,
        health_check_interval=0,
        decode_responses=False,
        protocol=2,
    )
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


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
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        shards: int,
        timeout: float,
        dedupe_ttl: int,
        replay_window: int = 300,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = shards
        self.timeout = timeout
        self.dedupe_ttl = dedupe_ttl
        self.replay_window = max(1, replay_window)  # EX 0 is an error in Redis
        self._tags = [f"{prefix}:{{{shard}}}" for shard in range(shards)]
        self._batcher = batcher = _Batcher(client, timeout=timeout)
        self._verify = _Script(client, _VERIFY_LUA, batcher)
        self._append = _Script(client, _APPEND_LUA, batcher)
        self._put_status = _Script(client, _PUT_STATUS_LUA, batcher)
        self._gcra = _Script(client, _GCRA_LUA, batcher)

    def shard_of(self, key: bytes) -> int:
        """Subjects and scan ids are random, so their first bytes spread evenly."""
        return int.from_bytes(key[:4], "big") % self.shards

    def _tag(self, shard: int) -> str:
        """The hash-tagged start of every key of one shard (see the module docstring)."""
        return self._tags[shard]

    def status_key(self, subject: bytes) -> str:
        return f"{self._tag(self.shard_of(subject))}:st:{subject.hex()}"

    def stream_key(self, shard: int) -> str:
        return f"{self._tag(shard)}:scans"

    def dedupe_key(self, shard: int, scan_id: str) -> str:
        return f"{self._tag(shard)}:sid:{scan_id}"

    def replay_key(self, shard: int, token_id: bytes) -> str:
        return f"{self._tag(shard)}:rp:{token_id.hex()}"

    def rate_key(self, kind: str, shard_key: bytes, ident: str) -> str:
        """A rate-limit key: ``kind`` is ``t`` (terminal) or ``c`` (citizen)."""
        return f"{self._tag(self.shard_of(shard_key))}:rl:{kind}:{ident}"

    def rate_limit_submit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> asyncio.Future[Any]:
        """Queue one GCRA call in this event-loop turn's batch and return its raw reply.

        It rides in the same write as whatever else is submitted in this turn (the verify
        script), so a limit costs no round trip of its own. Read the reply with
        :meth:`rate_limit_result`. Numbers are passed as text (``repr`` of floats).
        """
        return self._gcra.submit(key, now_ms, interval_ms, tolerance_ms, cost)

    def rate_limit_result(self, future: asyncio.Future[Any]) -> tuple[bool, float]:
        """(allowed, TAT in ms) from a finished :meth:`rate_limit_submit`, or
        :class:`StoreUnavailable`. After NOSCRIPT the script is loaded again for the next call."""
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            if isinstance(error, NoScriptError):
                loading = self._batcher.submit(("SCRIPT", "LOAD", _GCRA_LUA))
                loading.add_done_callback(_consume)
            log.warning("redis unavailable during rate limit: %s", type(error).__name__)
            raise StoreUnavailable("cache unavailable (rate limit)") from error
        reply = future.result()
        return bool(reply[0]), float(reply[1])

    async def rate_limit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> tuple[bool, float]:
        """:meth:`rate_limit_submit` and wait for it (loading the script on NOSCRIPT)."""
        args = (key, now_ms, interval_ms, tolerance_ms, cost)
        with redis_errors("rate limit"):
            reply = await self._gcra(*args)
        return bool(reply[0]), float(reply[1])

    def stream_keys(self) -> list[str]:
        return [self.stream_key(shard) for shard in range(self.shards)]

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
        """One round trip: live status plus the scan appended with its snapshot, or None.

        The scan is flagged as a replay in the stream when the same pass (``token_id``) was
        scanned at another ``place`` within the replay window; the decision is not affected.
        Batched calls need no deadline of their own: the batch they ride in has one.
        """
        tag = self._tags[int.from_bytes(subject[:4], "big") % self.shards]  # shard_of, inlined
        script = self._verify
        command = (
            "EVALSHA",
            script.sha,
            script.numkeys,
            f"{tag}:st:{subject.hex()}",
            f"{tag}:scans",
            f"{tag}:sid:{scan_id}",
            f"{tag}:rp:{token_id.hex()}",
            now,
            pass_version,
            self.dedupe_ttl,
            record,
            place,
            self.replay_window,
        )
        try:
            try:  # the batch future awaited here, not through _Script: one coroutine level less
                found = await self._batcher.submit(command)
            except NoScriptError:
                found = await script.load_and_retry(command)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis unavailable during verify: %s", type(exc).__name__)
            raise StoreUnavailable("cache unavailable (verify)") from exc
        return None if found is None else LiveStatus.from_fields(found)

    async def record(self, shard_key: bytes, scan_id: str, record: str) -> bool:
        """Append a scan whose decision is already known; False when the scan id was seen."""
        shard = self.shard_of(shard_key)
        with redis_errors("record scan"):
            added = await self._append(
                self.stream_key(shard), self.dedupe_key(shard, scan_id), self.dedupe_ttl, record
            )
        return bool(added)

    async def get_status(self, subject: bytes) -> LiveStatus | None:
        with redis_errors("read status"):
            found = await self._batcher.submit(
                ("HMGET", self.status_key(subject), "c", "v", "u", "n")
            )
        if found[1] is None:
            return None
        return LiveStatus.from_fields(cast("list[bytes]", found))

    async def put_status(self, subject: bytes, status: LiveStatus) -> None:
        color = "" if status.color is None else status.color.value
        with redis_errors("write status"):
            await self._put_status(
                self.status_key(subject),
                status.version,
                color,
                status.valid_until,
                status.holder,
            )

    async def put_statuses(
        self, items: Sequence[tuple[bytes, LiveStatus]], *, batch: int = 1000
    ) -> int:
        """:meth:`put_status` for many subjects at once (seeding): the same script and keys,
        pipelined, one round trip per ``batch`` under its own deadline (the per-call timeout
        plus a millisecond per item). Returns how many were written; the others already held a
        newer version, which the script never moves back."""
        written = 0
        with redis_errors("write statuses"):
            async with asyncio.timeout(self.timeout):
                sha = await self.client.script_load(_PUT_STATUS_LUA)
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                async with asyncio.timeout(self.timeout + 0.001 * len(chunk)):
                    async with self.client.pipeline(transaction=False) as pipe:
                        for subject, status in chunk:
                            color = "" if status.color is None else status.color.value
                            pipe.evalsha(
                                sha,
                                1,
                                self.status_key(subject),
                                status.version,
                                color,
                                status.valid_until,
                                status.holder,
                            )
                        results = await pipe.execute()
                written += sum(int(r) for r in results)
        return written

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
