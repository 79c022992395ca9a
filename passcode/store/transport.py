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
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, DataError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from passcode.errors import StoreUnavailable
from passcode.metrics import REDIS_BATCH

# The errors a reply or a failed exchange raise, for the store modules to tell apart.
__all__ = [
    "NoScriptError",
    "RedisError",
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


class Transport:
    """One Redis's connections, and the batcher that sends the commands callers submit in the
    same event-loop turn as one pipeline.

    Each command is still one script call with its own result (the verify path stays one
    round trip); many of them share a write, a read and redis-py's per-call bookkeeping, which
    at thousands of scans a second costs more than the commands themselves.
    """

    def __init__(self, client: aioredis.Redis, *, timeout: float) -> None:
        self.client = client  # redis-py's; only this module drives it
        self.timeout = timeout
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
        self, commands: Sequence[Keyed], *, timeout: float, raise_errors: bool = True
    ) -> list[Any]:
        """A pipeline of one's own (not coalesced with the hot path's batch, under its own
        deadline): the replies in order. A failed exchange (Redis gone, the deadline) raises;
        so does the first error reply, unless ``raise_errors`` is False: then an error reply is
        returned in its place, as its exception, for the caller to tell apart."""
        loop = asyncio.get_running_loop()
        batch: _Batch = [(command, loop.create_future()) for command, _ in commands]
        await self._send(batch, timeout)
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

    async def _send(self, batch: _Batch, timeout: float | None = None) -> None:
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

    def __init__(self, source: str, transport: Transport) -> None:
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


def connect(url: str, *, timeout: float, max_connections: int) -> Transport:
    """The transport to the Redis at ``url`` (connections are made on first use)."""
    client = create_client(url, timeout=timeout, max_connections=max_connections)
    return Transport(client, timeout=timeout)


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Turn every Redis failure (and a missed deadline) into :class:`StoreUnavailable`."""
    try:
        yield
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
