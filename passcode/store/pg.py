"""PostgreSQL: pool with deadlines, migrations, and the one place driver errors are translated."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from time import perf_counter
from typing import TYPE_CHECKING

import asyncpg

from passcode.errors import StoreUnavailable
from passcode.metrics import PG_ACQUIRE_SECONDS

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Pool = asyncpg.Pool[asyncpg.Record]
    Connection = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.pool.PoolConnectionProxy


@contextlib.contextmanager
def pg_errors(what: str) -> Iterator[None]:
    """Turn connection loss, timeouts and server shutdowns into :class:`StoreUnavailable`.

    Data errors (constraint violations and the like) are bugs or handled by the caller, so they
    pass through unchanged.
    """
    try:
        yield
    except (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
        asyncpg.QueryCanceledError,
        asyncpg.TooManyConnectionsError,
    ) as exc:
        log.warning("postgres unavailable during %s: %s", what, type(exc).__name__)
        raise StoreUnavailable(f"database unavailable ({what})") from exc


async def create_pool(dsn: str, *, timeout: float, min_size: int, max_size: int) -> Pool:
    """A pool whose every query has a deadline (``command_timeout``)."""
    with pg_errors("connect"):
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            command_timeout=timeout,
            max_inactive_connection_lifetime=60.0,
        )
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def acquire(pool: Pool, what: str, timeout: float) -> AsyncIterator[Connection]:
    """A connection within ``timeout``, with errors translated; the wait is measured."""
    with pg_errors(what):
        started = perf_counter()
        async with pool.acquire(timeout=timeout) as conn:
            PG_ACQUIRE_SECONDS.observe(perf_counter() - started)
            yield conn


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("passcode.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: Pool, timeout: float = 60.0) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns what ran.

    A transaction-scoped advisory lock lets several replicas start at once safely.
    """
    applied: list[str] = []
    with pg_errors("migrate"):
        async with pool.acquire(timeout=timeout) as conn:
            # Under the lock too: two replicas' first start on an empty database would both
            # create the table (IF NOT EXISTS is no guard against a concurrent creator).
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7412001)", timeout=timeout)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    timeout=timeout,
                )
            for number, name, sql in _migrations():
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(7412001)", timeout=timeout)
                    done = await conn.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1", number
                    )
                    if done:
                        continue
                    await conn.execute(sql, timeout=timeout)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        number,
                        name,
                    )
                    applied.append(name)
    for name in applied:
        log.info("applied migration %s", name)
    return applied
