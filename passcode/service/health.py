"""Readiness: whether PostgreSQL and Redis each answer within their deadline; the scan
stream's backlog, for the metrics."""

from __future__ import annotations

import asyncio

from passcode.errors import StoreUnavailable
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire
from passcode.store.scanstream import shard_backlogs


async def probe_stores(pool: Pool, cache: Cache, *, timeout: float) -> dict[str, str]:
    """``ok`` or ``unavailable`` for ``postgres`` and ``redis``, each asked within ``timeout``."""

    async def postgres() -> None:
        async with acquire(pool, "readiness", timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)

    checks: dict[str, str] = {}
    for name, probe in (("postgres", postgres), ("redis", cache.ping)):
        try:
            async with asyncio.timeout(timeout):
                await probe()
            checks[name] = "ok"
        except (StoreUnavailable, TimeoutError):
            checks[name] = "unavailable"
    return checks


async def stream_backlogs(cache: Cache, *, timeout: float) -> list[tuple[int, int, int | None]]:
    """Per scan-stream shard: its number, the entries it holds (not yet stored), and the Redis
    time in ms of its oldest (None: empty); raises StoreUnavailable or TimeoutError."""
    async with asyncio.timeout(timeout):
        return await shard_backlogs(cache, timeout=timeout)
