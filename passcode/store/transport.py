"""The Redis transport: the one module of passcode that speaks redis-py.

It owns the connections (a redis-py pool told to fail within a deadline instead of retrying for
a minute), the coalescing batcher (the commands submitted in one event-loop turn go out as one
write), command packing (hiredis, in C) and reply reading (straight from the connection's hiredis
reader). The key layout (:mod:`passcode.store.cache`) and the scan stream
(:mod:`passcode.store.scanstream`) are written on :class:`Transport` and :class:`Script`;
:func:`redis_errors` turns a failure into :class:`~passcode.errors.StoreUnavailable` there.
:class:`StartupProbe` is the synchronous odd one out: the embedded server's start-up checks.

Every command is handed over with its key: ``submit(command, key)`` for the coalesced batch,
``execute([(command, key), ...])`` for a pipeline of one's own. The key is the one whose hash
slot decides the node; every key one command touches carries the same hash tag (the cache's
layout), so one key per command is enough, and ``""`` names none (``PING``, a ``SCRIPT LOAD``
for whichever node will need it). A single Redis ignores keys. The Redis Cluster transport (the
next issue) is this class with its pending batch grouped by the node owning each key's slot,
one write per node, and ``""`` sent to every node; ``SCRIPT LOAD`` after ``NOSCRIPT`` is given
the retried command's key, so it lands on the node that answered. No caller changes.

Two speed-ups read redis-py's private state (each measured on the verify path; see the notes at
the code): replies are read from a connection's hiredis parser
(``redis._parsers.hiredis._AsyncHiredisParser``, its ``_reader`` and ``_stream``), and a kept
connection is checked for being open with nothing unread on the asyncio reader under it
(``connection._reader._buffer``). pyproject.toml pins redis-py to the releases tested, and
``tests/integration/test_transport.py`` fails naming the attribute when a release moves one; a
parser other than hiredis takes redis-py's own reading (:func:`_deliver_slowly`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    DataError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from passcode.errors import StoreUnavailable
from passcode.metrics import REDIS_BATCH

# The errors a reply or a failed exchange raise, for the store modules to tell apart.
__all__ = [
    "ClusterTransport",
    "NoScriptError",
    "RedisError",
    "RedisTransport",
    "ResponseError",
    "Script",
    "StartupProbe",
    "Transport",
    "connect",
    "consume",
    "redis_errors",
]

log = logging.getLogger(__name__)

KEPT_CONNECTIONS = 8  # a batch in flight per event-loop turn; more than 8 at once is rare

# (command, key): a command spelled as separate words with the key deciding its node.
Keyed = tuple[tuple[object, ...], str]
_Batch = list[tuple[tuple[object, ...], "asyncio.Future[Any]"]]


class RedisTransport(Protocol):
    """What the store modules drive: one Redis (:class:`Transport`) or a Redis Cluster
    (:class:`ClusterTransport`), the same calls."""

    @property
    def client(self) -> Any:
        """redis-py's client, for tests and tools that look into Redis."""
        ...

    def submit(self, command: tuple[object, ...], key: str) -> asyncio.Future[Any]: ...

    async def execute(
        self,
        commands: Sequence[Keyed],
        *,
        timeout: float,
        raise_errors: bool = True,
        durable: bool = True,
    ) -> list[Any]: ...

    async def close(self) -> None: ...


class ReplicaWaitFailed(RedisError):
    """``WAIT`` saw fewer replicas take the batch's writes than asked within its deadline: the
    writes may die with their primary, so nobody is told they were made."""


class Transport:
    """One Redis's connections, and the batcher that sends the commands callers submit in the
    same event-loop turn as one pipeline.

    Each command is still one script call with its own result (the verify path stays one
    round trip); many of them share a write, a read and redis-py's per-call bookkeeping, which
    at thousands of scans a second costs more than the commands themselves.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout: float,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        self.client = client  # redis-py's; only this module drives it
        self.timeout = timeout
        # WAIT after every batch (0: never): its callers hear back only once that many
        # replicas hold its writes, so a primary dying after the answer loses none of them.
        self._wait = ("WAIT", wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
        self._pending: _Batch = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        # Connections kept between batches: redis-py's pool takes a lock, records metrics,
        # dispatches an event and probes the socket on every get and release, which per
        # batch cost more than the batch's own write. Only whole, fully read ones are kept;
        # they count as in use in the pool, whose disconnect (the client's close) closes them.
        self._idle: list[Any] = []

    def submit(self, command: tuple[object, ...], key: str) -> asyncio.Future[Any]:
        """Queue ``command`` in this event-loop turn's batch; ``key`` names its node (unused
        on one Redis, see the module docstring). The batch has the deadline."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def execute(
        self,
        commands: Sequence[Keyed],
        *,
        timeout: float,
        raise_errors: bool = True,
        durable: bool = True,
    ) -> list[Any]:
        """A pipeline of one's own (not coalesced with the hot path's batch, under its own
        deadline): the replies in order. A failed exchange (Redis gone, the deadline) raises;
        so does the first error reply, unless ``raise_errors`` is False: then an error reply is
        returned in its place, as its exception, for the caller to tell apart.

        ``durable=False`` skips the replica wait: for reads, probes and the drain's stream
        upkeep, whose loss in a failover is redone (a re-delivered entry is stored once), and
        which must keep working on a promoted primary that has no replica yet."""
        loop = asyncio.get_running_loop()
        batch: _Batch = [(command, loop.create_future()) for command, _ in commands]
        await self._send(batch, timeout, wait=durable)
        replies = [future.exception() or future.result() for _, future in batch]
        for reply in replies:
            if isinstance(reply, _BatchFailed) or (raise_errors and isinstance(reply, Exception)):
                raise reply
        return replies

    async def close(self) -> None:
        await self.client.aclose()

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

    async def _send(
        self, batch: _Batch, timeout: float | None = None, *, wait: bool = True
    ) -> None:
        """Write every command at once on one pooled connection, then read the replies in order
        (within ``timeout``, by default the transport's).

        Lighter than redis-py's ``Pipeline`` (no command stack, no per-command callbacks). An
        error reply belongs to its own command only; anything else (Redis gone, the deadline)
        fails the whole batch and the connection is dropped, never returned half-read.
        """
        REDIS_BATCH.observe(len(batch))  # one round trip (passcode.metrics)
        pool = self.client.connection_pool
        connection = None
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                connection = await self._connection()
                if self._wait is None or not wait:
                    await connection.send_packed_command(_pack(batch), check_health=False)
                    await _deliver(connection, batch)
                else:
                    await self._send_and_wait(connection, batch, self._wait)
        except BaseException as exc:
            # Whatever ends the send (Redis down, the deadline, an argument that cannot be
            # encoded, this task cancelled at shutdown) must wake every caller: batched calls
            # have no deadline of their own, so a future left pending would wait forever.
            if connection is not None:
                await connection.disconnect(nowait=True)
                await pool.release(connection)
            for _, future in batch:
                if not future.done():
                    future.set_exception(_BatchFailed(f"redis batch failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, (RedisError, OSError, TimeoutError)):
                log.error("redis batch failed unexpectedly", exc_info=exc)
        else:
            if len(self._idle) < KEPT_CONNECTIONS:
                self._idle.append(connection)
            else:
                await pool.release(connection)

    async def _send_and_wait(
        self, connection: Any, batch: _Batch, wait: tuple[str, int, int]
    ) -> None:
        """The batch, then ``WAIT``, on one write; the replies reach their callers only when
        enough replicas acknowledged (else every caller gets :class:`ReplicaWaitFailed`)."""
        loop = asyncio.get_running_loop()
        held: _Batch = [(command, loop.create_future()) for command, _ in batch]
        waited: asyncio.Future[Any] = loop.create_future()
        held.append((wait, waited))
        await connection.send_packed_command(_pack(held), check_health=False)
        await _deliver(connection, held)
        acknowledged: Any = waited.exception() or waited.result()
        if isinstance(acknowledged, BaseException) or int(acknowledged) < wait[1]:
            failure = ReplicaWaitFailed(f"WAIT {wait[1]} {wait[2]}: {acknowledged!r}")
            for _, reply in held:
                consume(reply)
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, future), (_, reply) in zip(batch, held, strict=False):
            if future.done():
                continue
            error = reply.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(reply.result())


class _BatchFailed(ConnectionError):
    """The whole batch failed (not one command's error reply): every caller in it gets one."""


def _pack(batch: _Batch) -> bytes:
    """The batch as one RESP write, packed by hiredis (C); every submitter spells a command as
    separate words ("SCRIPT", "LOAD"), which is all :class:`_HiredisPacking` adds."""
    pack = hiredis.pack_command
    try:
        return b"".join([pack(command) for command, _ in batch])  # type: ignore[arg-type]  # stub: 1-tuple
    except TypeError as exc:  # an argument hiredis cannot encode: redis-py's error for it
        raise DataError(str(exc)) from exc


async def _deliver(connection: Any, batch: _Batch) -> None:
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


async def _deliver_slowly(connection: Any, batch: _Batch) -> None:
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


class Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT; ``keys`` count fixed per script,
    the first key naming the node (every key of one call shares its hash tag).

    Lighter than redis-py's ``AsyncScript`` on the hot path, which re-checks its client's type
    with a ``typing.Protocol`` ``isinstance`` on every call.
    """

    def __init__(self, source: str, transport: RedisTransport) -> None:
        self.source = source
        self.transport = transport
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.numkeys = _numkeys(source)

    def submit(self, *keys_and_args: object) -> asyncio.Future[Any]:
        """Queue the call in this event-loop turn's batch; NOSCRIPT is the caller's to handle."""
        command = ("EVALSHA", self.sha, self.numkeys, *keys_and_args)
        return self.transport.submit(command, command[3])  # type: ignore[arg-type]  # a key

    async def __call__(self, *keys_and_args: object) -> Any:
        command = ("EVALSHA", self.sha, self.numkeys, *keys_and_args)
        key: str = command[3]  # type: ignore[assignment]  # the first key, a str
        try:
            return await self.transport.submit(command, key)
        except NoScriptError:
            return await self.load_and_retry(command, key)

    async def load_and_retry(self, command: tuple[object, ...], key: str) -> Any:
        """After NOSCRIPT: load the script, then send ``command`` again.

        Batched too: after a SCRIPT FLUSH or a restart every caller of a pipeline gets
        NOSCRIPT at once; one pipeline of loads (under its deadline) instead of a connection
        each, which would exhaust the pool and push them all to Postgres.
        """
        await self.transport.submit(("SCRIPT", "LOAD", self.source), key)
        return await self.transport.submit(command, key)

    def load_later(self, key: str) -> None:
        """Load the script in the next batch, for a caller that got NOSCRIPT and does not
        retry; nobody waits for the answer."""
        self.transport.submit(("SCRIPT", "LOAD", self.source), key).add_done_callback(consume)


def _numkeys(source: str) -> int:
    """The number of KEYS a script uses: the highest ``KEYS[n]`` it mentions."""
    return max(int(n) for n in re.findall(r"KEYS\[(\d+)\]", source))


def consume(future: asyncio.Future[Any]) -> None:
    """Done callback of a call nobody awaits: retrieve its outcome so none is reported lost."""
    if not future.cancelled():
        future.exception()


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
    :class:`Transport` (redis-py's ``socket_timeout`` would add an ``asyncio.wait_for`` task to
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


def connect(
    url: str,
    *,
    timeout: float,
    max_connections: int,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 0,
) -> Transport:
    """The transport to the Redis at ``url`` (connections are made on first use)."""
    client = create_client(url, timeout=timeout, max_connections=max_connections)
    return Transport(
        client, timeout=timeout, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms
    )


SLOTS = 16384
MAX_REDIRECTS = 5
REFRESH_EVERY = 0.2  # at most this often (s), however many replies say the map is stale
TRY_AGAIN_AFTER = 0.02  # s: a multi-key command met a slot in migration


class ClusterTransport:
    """A Redis Cluster: one :class:`Transport` per primary, each command routed to the node
    owning its key's hash slot.

    The commands submitted in one event-loop turn go out as one pipeline per node (each node's
    transport batches its own), so verify stays one round trip. ``MOVED`` updates the slot and
    resends to the named node (and refreshes the whole map from ``CLUSTER SLOTS``, at most every
    :data:`REFRESH_EVERY`); ``ASK`` resends once to the importing node behind ``ASKING`` in the
    same write; ``TRYAGAIN`` waits a moment; a node that fails (dead, frozen, the deadline)
    fails its callers, who fall back as for a down Redis, and refreshes the map, so a promoted
    replica takes over as soon as the cluster has elected it. A keyless command (``""``: PING,
    SCRIPT LOAD) goes to every primary. Until the first map is read, commands go to a seed,
    whose ``MOVED`` routes them.
    """

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        *,
        url: str,
        timeout: float,
        max_connections: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster needs at least one seed node")
        self.timeout = timeout
        self._url = urlsplit(url)
        self._max_connections = max_connections
        self._wait = (wait_replicas, wait_timeout_ms)
        self._seeds = [f"{host}:{port}" for host, port in seeds]
        self._nodes: dict[str, Transport] = {}
        self._slots: list[str | None] = [None] * SLOTS
        self._primaries: list[str] = []
        self._tag_slots: dict[str, int] = {}
        self._refreshed_at = -REFRESH_EVERY
        self._refresh: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: Any = None
        self._closed = False

    @property
    def client(self) -> Any:
        """redis-py's cluster client, for tests and tools that look into Redis; made on first
        use (the service never uses it)."""
        if self._client is None:
            host, _, port = self._seeds[0].rpartition(":")
            self._client = aioredis.RedisCluster(
                host=host,
                port=int(port),
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                password=self._url.password,
                username=self._url.username,
                protocol=2,
            )
        return self._client

    # --- routing -----------------------------------------------------------------------

    def slot(self, key: str) -> int:
        """The key's hash slot (CRC16 of its hash tag), remembered per tag: the cache's keys
        share a few hundred tags, so a verify computes none."""
        start = key.find("{")
        if start >= 0:
            end = key.find("}", start + 1)
            if end > start + 1:
                tag = key[start + 1 : end]
                found = self._tag_slots.get(tag)
                if found is None:
                    found = self._tag_slots[tag] = key_slot(tag.encode())
                return found
        return int(key_slot(key.encode()))

    def _node(self, address: str) -> Transport:
        node = self._nodes.get(address)
        if node is None:
            if self._closed:  # a late redirect or refresh must not open what close() closed
                raise _BatchFailed("the cluster transport is closed")
            host, _, port = address.rpartition(":")
            netloc = f"{host}:{port}"
            if self._url.username or self._url.password:
                netloc = f"{self._url.username or ''}:{self._url.password or ''}@{netloc}"
            url = urlunsplit(("redis", netloc, "/0", "", ""))
            node = self._nodes[address] = connect(
                url,
                timeout=self.timeout,
                max_connections=self._max_connections,
                wait_replicas=self._wait[0],
                wait_timeout_ms=self._wait[1],
            )
        return node

    def _owner(self, key: str) -> str:
        return self._slots[self.slot(key)] or self._seeds[0]

    # --- the calls -----------------------------------------------------------------------

    def submit(self, command: tuple[object, ...], key: str) -> asyncio.Future[Any]:
        """Queue ``command`` in this turn's pipeline to the node owning ``key``; its reply once
        redirections are followed."""
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[Any] = loop.create_future()
        if not key:
            self._broadcast(command, outer)
            return outer
        self._route(command, key, self._owner(key), outer, 0, asking=False)
        return outer

    def _route(
        self,
        command: tuple[object, ...],
        key: str,
        address: str,
        outer: asyncio.Future[Any],
        hops: int,
        *,
        asking: bool,
    ) -> None:
        try:
            node = self._node(address)
        except _BatchFailed as exc:
            if not outer.done():
                outer.set_exception(exc)
            return
        if asking:  # the same write, right before the command: nothing comes between
            node.submit(("ASKING",), key).add_done_callback(consume)
        inner = node.submit(command, key)
        inner.add_done_callback(functools.partial(self._settle, command, key, address, outer, hops))

    def _settle(
        self,
        command: tuple[object, ...],
        key: str,
        address: str,
        outer: asyncio.Future[Any],
        hops: int,
        inner: asyncio.Future[Any],
    ) -> None:
        if inner.cancelled():
            if not outer.done():
                outer.cancel()
            return
        error = inner.exception()
        if outer.done():
            return
        if error is None:
            outer.set_result(inner.result())
            return
        if hops < MAX_REDIRECTS:
            if isinstance(error, MovedError):
                target = _address(error)
                self._slots[error.slot_id] = target
                self._stale()
                self._route(command, key, target, outer, hops + 1, asking=False)
                return
            if isinstance(error, AskError):
                self._route(command, key, _address(error), outer, hops + 1, asking=True)
                return
            if isinstance(error, TryAgainError):
                loop = asyncio.get_running_loop()
                again = functools.partial(
                    self._route, command, key, self._owner(key), outer, hops + 1, asking=False
                )
                loop.call_later(TRY_AGAIN_AFTER, again)
                return
        if isinstance(error, (ConnectionError, OSError, TimeoutError, ClusterDownError)):
            self._stale()  # a node gone: is there a new primary for its slots?
        outer.set_exception(error)

    def _broadcast(self, command: tuple[object, ...], outer: asyncio.Future[Any]) -> None:
        """A keyless command to every primary: the first's reply, or the first failure."""
        addresses = self._primaries or self._seeds[:1]
        inners = [self._node(address).submit(command, "") for address in addresses]
        gathered = asyncio.gather(*inners, return_exceptions=True)

        def done(all_done: asyncio.Future[list[Any]]) -> None:
            if outer.done():
                return
            replies = all_done.result()
            failed = next((r for r in replies if isinstance(r, BaseException)), None)
            if failed is not None:
                self._stale()
                outer.set_exception(failed)
            else:
                outer.set_result(replies[0])

        gathered.add_done_callback(done)

    async def execute(
        self,
        commands: Sequence[Keyed],
        *,
        timeout: float,
        raise_errors: bool = True,
        durable: bool = True,
    ) -> list[Any]:
        """:meth:`Transport.execute` across the cluster: each node's share as a pipeline of its
        own under ``timeout`` (the drain's long reads keep their deadline), the shares sent
        together; redirected commands are resent where they belong, a keyless one goes to every
        primary (the first primary's reply is its reply)."""
        if not self._primaries:
            await self._refresh_now(timeout)
        replies: list[Any] = [None] * len(commands)
        targets = {i: self._owner(key) for i, (_, key) in enumerate(commands) if key}
        asking: set[int] = set()
        async with asyncio.timeout(timeout):
            await self._keyless(commands, replies, timeout, durable)
            for _ in range(MAX_REDIRECTS + 1):
                if not targets:
                    break
                answered = await self._send_shares(commands, targets, asking, timeout, durable)
                again: dict[int, str] = {}
                asking = set()
                pause = False
                for share, answer in answered:
                    for (_, index), reply in zip(share, answer, strict=True):
                        if index is not None:
                            redirect = self._redirect(reply, commands[index][1])
                            if redirect is None:
                                replies[index] = reply
                                continue
                            again[index], ask, wait = redirect
                            if ask:
                                asking.add(index)
                            pause = pause or wait
                targets = again
                if pause:
                    await asyncio.sleep(TRY_AGAIN_AFTER)
            for i in targets:
                replies[i] = ClusterDownError("too many redirections")
        for reply in replies:
            if raise_errors and isinstance(reply, BaseException):
                raise reply
        return replies

    async def _send_shares(
        self,
        commands: Sequence[Keyed],
        targets: dict[int, str],
        asking: set[int],
        timeout: float,
        durable: bool,
    ) -> list[tuple[list[tuple[Keyed, int | None]], list[Any]]]:
        """Each node's share of ``targets`` (command index → node) as one pipeline, all sent
        together: (share, replies) per node, a share's entries naming their command (None for
        the ``ASKING`` in front of a command an ASK resends)."""
        groups: dict[str, list[tuple[Keyed, int | None]]] = {}
        for i, address in targets.items():
            share = groups.setdefault(address, [])
            if i in asking:  # ASKING right before the command, in the same pipeline
                share.append(((("ASKING",), commands[i][1]), None))
            share.append((commands[i], i))
        answers = await self._gathered(
            [
                self._node(address).execute(
                    [command for command, _ in share],
                    timeout=timeout,
                    raise_errors=False,
                    durable=durable,
                )
                for address, share in groups.items()
            ]
        )
        return list(zip(groups.values(), answers, strict=True))

    async def _keyless(
        self, commands: Sequence[Keyed], replies: list[Any], timeout: float, durable: bool
    ) -> None:
        """The keyless commands of ``commands`` on every primary, the first one's replies put
        in their places in ``replies``."""
        keyless = [i for i, (_, key) in enumerate(commands) if not key]
        if not keyless:
            return
        shares = [
            self._node(address).execute(
                [commands[i] for i in keyless],
                timeout=timeout,
                raise_errors=False,
                durable=durable,
            )
            for address in self._primaries or self._seeds[:1]
        ]
        first, *_ = await self._gathered(shares)
        for i, reply in zip(keyless, first, strict=True):
            replies[i] = reply

    def _redirect(self, reply: Any, key: str) -> tuple[str, bool, bool] | None:
        """Where a reply sends its command next (address, behind ASKING, after a pause), or
        None when it is the answer."""
        if isinstance(reply, MovedError):
            target = _address(reply)
            self._slots[reply.slot_id] = target
            self._stale()
            return target, False, False
        if isinstance(reply, AskError):
            return _address(reply), True, False
        if isinstance(reply, TryAgainError):
            return self._owner(key), False, True
        return None

    async def _gathered(self, shares: list[Any]) -> list[list[Any]]:
        """Every node's share answered; a node that failed (gone, the deadline) raises after
        marking the slot map stale."""
        answers: list[Any] = await asyncio.gather(*shares, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                self._stale()
                raise answer
        return answers

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()
        if self._client is not None:
            await self._client.aclose()

    # --- the slot map ----------------------------------------------------------------------

    def _stale(self) -> None:
        """Refresh the slot map soon (at most every :data:`REFRESH_EVERY`)."""
        if self._closed or (self._refresh is not None and not self._refresh.done()):
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._refreshed_at + REFRESH_EVERY - loop.time())
        task = asyncio.ensure_future(self._refresh_after(delay))
        self._refresh = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._refresh_now(self.timeout)

    async def _refresh_now(self, timeout: float) -> None:
        """The slot map from ``CLUSTER SLOTS`` of the first node that answers: known primaries
        first, then the seeds."""
        self._refreshed_at = asyncio.get_running_loop().time()
        candidates = list(dict.fromkeys([*self._primaries, *self._seeds, *self._nodes]))
        failure: BaseException | None = None
        for address in candidates:
            try:
                (reply,) = await self._node(address).execute(
                    [(("CLUSTER", "SLOTS"), "")], timeout=timeout, durable=False
                )
            except (RedisError, OSError, TimeoutError) as exc:
                failure = exc
                continue
            slots: list[str | None] = [None] * SLOTS
            primaries: list[str] = []
            for first, last, primary, *_ in reply:
                host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                owner = f"{host or address.rpartition(':')[0]}:{int(primary[1])}"
                if owner not in primaries:
                    primaries.append(owner)
                slots[int(first) : int(last) + 1] = [owner] * (int(last) - int(first) + 1)
            if any(owner is None for owner in slots):
                failure = ClusterDownError(f"{address}: not every slot is served")
                continue
            self._slots, self._primaries = slots, primaries
            return
        raise failure if failure is not None else ClusterDownError("no cluster node answered")


def _address(error: AskError) -> str:  # MovedError is an AskError
    return f"{error.host}:{error.port}"


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Turn every Redis failure (and a missed deadline) into :class:`StoreUnavailable`."""
    try:
        yield
    except AskError as exc:  # and MovedError: a cluster node, spoken to as a single Redis
        log.error(
            "redis answered %s during %s: it is a Redis Cluster node; name the cluster's nodes"
            " in PASSCODE_REDIS_CLUSTER_NODES",
            type(exc).__name__,
            what,
        )
        raise StoreUnavailable(f"cache unavailable ({what}): a Redis Cluster node") from exc
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis unavailable during %s: %s", what, type(exc).__name__)
        raise StoreUnavailable(f"cache unavailable ({what})") from exc


class StartupProbe:
    """Synchronous checks of a Redis being started on a unix socket (the embedded server, before
    any event loop runs): one try per call, a deadline on each."""

    def __init__(self, socket_path: str, *, timeout: float = 2.0) -> None:
        self._client = redis.Redis(
            unix_socket_path=socket_path,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            protocol=2,
        )

    def state(self) -> str:
        """``ready`` (answers commands), ``loading`` (a server is there, not answering yet) or
        ``absent``. PING is refused with LOADING while Redis loads its data; between the moments
        it looks at its clients it does not answer at all (a timeout)."""
        try:
            self._client.ping()
        except (BusyLoadingError, RedisTimeoutError):
            return "loading"
        except (RedisConnectionError, OSError):
            return "absent"
        return "ready"

    def aof_size(self) -> int:
        """The append-only file's size (bytes) as Redis reports it."""
        return int(self._client.info("persistence").get("aof_current_size", 0))

    def rewrite_aof(self) -> str | None:
        """Start a background rewrite of the append-only file; Redis's refusal (one is already
        running), or None once started."""
        try:
            self._client.bgrewriteaof()
        except ResponseError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._client.close()
