"""Readiness: whether PostgreSQL and Redis each answer within their deadline."""

from __future__ import annotations

import asyncio

from passcode.errors import StoreUnavailable
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire


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
