"""The Redis transport (passcode/store/transport.py) on the real Redis: the redis-py private
state its fast reading relies on is still where it reads it (a new redis-py fails here, by
name, not as a slower service), the installed redis-py is one of the versions pinned as tested,
its pipelines of their own answer in order, errors as asked, and the cache's pipelines on it
(many statuses at once, the layout check, ping) keep their contracts."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from packaging.requirements import Requirement

from passcode.app import open_cache
from passcode.config import Settings
from passcode.domain.model import Color
from passcode.domain.status import LiveStatus
from passcode.errors import StoreUnavailable
from passcode.store import transport as transport_module
from passcode.store.cache import Cache, LayoutMismatchError
from passcode.store.transport import ResponseError, StartupProbe, Transport, connect
from tests.helpers import ON_CLUSTER

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


pytestmark = pytest.mark.skipif(
    ON_CLUSTER,
    reason="the one-node Transport's own tests; the cluster's are test_cluster_transport.py",
)


@pytest.fixture
async def transport(settings: Settings) -> AsyncIterator[Transport]:
    opened = connect(settings.redis_url or "", timeout=5, max_connections=4)
    try:
        yield opened
    finally:
        await opened.close()


# The redis-py releases this module's tests (and test_scan_stream, test_redis_packing,
# test_drain_poison) passed on; pyproject.toml's range spans them and no further.
TESTED = ("5.3.1", "6.0.0", "6.4.0", "7.0.1", "7.4.1", "8.0.1", "8.1.0")


def redis_pin() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "redis"]
    return pin


def test_the_redis_py_pin_spans_the_releases_tested_and_no_further() -> None:
    """The dependency range admits every release tested, but not 5.2 (its
    ``ConnectionPool.get_connection`` needs a command name: every batch failed) nor the next,
    untested, minor release."""
    spec = redis_pin().specifier
    assert [v for v in TESTED if not spec.contains(v)] == []
    assert not spec.contains("5.2.1")
    assert not spec.contains("8.2.0")


def test_the_installed_redis_py_is_one_the_pin_names() -> None:
    """An environment outside the pinned range is not what the tests below vouch for."""
    spec, installed = redis_pin().specifier, metadata.version("redis")
    assert spec.contains(installed), (
        f"redis-py {installed} is installed; pyproject.toml pins {spec} (the versions"
        " passcode/store/transport.py was tested with)"
    )


async def test_redis_py_private_parser_state_is_where_the_transport_reads_it(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path reads a connection's hiredis parser (``_parser``, its ``_reader`` and
    ``_stream``) and the asyncio reader under it (``_reader._buffer``). Each is checked by
    name, and a batch must then be read on the fast path, never redis-py's slower one."""
    slow: list[object] = []

    async def slowly(connection: Any, batch: Any) -> None:
        slow.append(type(connection._parser))  # private: the parser that made it go slow
        raise AssertionError("the batch was read through redis-py's read_response")

    monkeypatch.setattr(transport_module, "_deliver_slowly", slowly)
    assert await transport.execute([(("PING",), "")], timeout=5) == [b"PONG"]
    connection = transport._idle[0]  # private: the kept connection the next batch reuses
    version = metadata.version("redis")
    parser = getattr(connection, "_parser", None)
    problems = []
    if not isinstance(parser, transport_module._AsyncHiredisParser):
        problems.append(
            f"connection._parser is {type(parser).__name__}, not"
            " redis._parsers.hiredis._AsyncHiredisParser"
        )
    if not isinstance(getattr(parser, "_reader", None), hiredis.Reader):
        problems.append("_AsyncHiredisParser._reader is not the connection's hiredis.Reader")
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        problems.append("connection._reader is not an asyncio.StreamReader")
    elif getattr(parser, "_stream", None) is not stream:
        problems.append("_AsyncHiredisParser._stream is not the connection's _reader")
    if not hasattr(stream, "_buffer"):
        problems.append("connection._reader._buffer is gone (asyncio.StreamReader)")
    assert not problems, (
        f"redis-py {version} moved private state passcode/store/transport.py reads: "
        + "; ".join(problems)
        + ". Update the transport (Transport._connection, _deliver) or keep redis-py pinned."
    )
    assert slow == []


async def test_a_pipeline_of_its_own_answers_in_order_and_raises_as_asked(
    transport: Transport, settings: Settings
) -> None:
    """execute: replies in order; the first error reply raised (the default) or returned in
    its place (raise_errors=False), the other commands having run either way."""
    key = f"{settings.redis_prefix}:transport"
    commands = [
        (("SET", key, "1"), key),
        (("INCRBY", key, "not-a-number"), key),
        (("INCR", key), key),
    ]
    replies = await transport.execute(commands, timeout=5, raise_errors=False)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == 2
    with pytest.raises(ResponseError, match="not an integer"):
        await transport.execute(commands, timeout=5)
    assert await transport.execute([(("GET", key), key)], timeout=5) == [b"2"]


async def test_a_failed_exchange_raises_even_when_error_replies_are_returned() -> None:
    """Nothing listening: execute raises (an OSError, which the store maps to StoreUnavailable)
    instead of handing back the failure as if it were one command's reply."""
    gone = connect("redis://127.0.0.1:1/0", timeout=1, max_connections=1)
    try:
        with pytest.raises(OSError, match="redis batch failed"):
            await gone.execute([(("PING",), "")], timeout=1, raise_errors=False)
    finally:
        await gone.close()


def test_the_startup_probe_finds_no_server_where_none_listens(tmp_path: Path) -> None:
    """The embedded server's start-up check tells "nobody there" from "loading": a socket path
    nothing listens on is absent (so a server is started), not loading (which would wait)."""
    probe = StartupProbe(str(tmp_path / "redis.sock"), timeout=1)
    try:
        assert probe.state() == "absent"
    finally:
        probe.close()


# --- the cache's own pipelines, on the transport ----------------------------------------------


async def test_many_statuses_are_written_in_chunks_and_never_moved_back(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """put_statuses: every subject written across several chunks (one pipeline each), the
    count returned is of those written; a subject already holding a newer version keeps it."""
    subjects = [uuid.uuid4().bytes for _ in range(7)]
    newer = LiveStatus(Color.RED, 9, 2_000_000_000, "新*")
    await cache.put_status(subjects[0], newer)
    status = LiveStatus(Color.GREEN, 3, 1_900_000_000, "李*四")
    written = await cache.put_statuses([(s, status) for s in subjects], batch=3)
    assert written == 6
    assert await cache.get_status(subjects[0]) == newer
    assert [await cache.get_status(s) for s in subjects[1:]] == [status] * 6
    fields = await raw_redis.hgetall(cache.status_key(subjects[1]))
    assert fields == {b"c": b"green", b"v": b"3", b"u": b"1900000000", b"n": "李*四".encode()}


async def test_an_error_reply_in_a_chunk_of_statuses_is_store_unavailable(
    cache: Cache, raw_redis: aioredis.Redis
) -> None:
    """A status key Redis refuses (WRONGTYPE: not a hash) fails the call as StoreUnavailable,
    not as a count of what was written."""
    subject = uuid.uuid4().bytes
    await raw_redis.set(cache.status_key(subject), "not a hash")
    status = LiveStatus(None, 1, 0, "")
    with pytest.raises(StoreUnavailable):
        await cache.put_statuses([(uuid.uuid4().bytes, status), (subject, status)])


async def test_the_shard_count_first_written_is_the_one_every_process_must_use(
    settings: Settings,
) -> None:
    """check_layout: the first process records its shard count; one with the same count runs,
    one with another is refused, naming the count to set."""
    first = open_cache(settings)
    same = open_cache(settings)
    other = open_cache(dataclasses.replace(settings, scan_shards=settings.scan_shards + 1))
    try:
        await first.check_layout()
        await same.check_layout()
        with pytest.raises(
            LayoutMismatchError, match=f"PASSCODE_SCAN_SHARDS={settings.scan_shards}"
        ):
            await other.check_layout()
    finally:
        for opened in (first, same, other):
            await opened.close()


async def test_ping_and_layout_fail_as_store_unavailable_when_redis_is_gone(
    settings: Settings,
) -> None:
    """Nothing listening: ping and check_layout raise StoreUnavailable (the service's start-up
    waits on it), never a driver error."""
    gone = open_cache(
        dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", redis_cluster_nodes=())
    )
    try:
        with pytest.raises(StoreUnavailable):
            await gone.ping()
        with pytest.raises(StoreUnavailable):
            await gone.check_layout()
    finally:
        await gone.close()
