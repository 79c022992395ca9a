"""Throwaway stores for the benchmark scripts: a database made for one run and dropped after it,
and the deletion of one run's Redis keys, so runs neither collide nor pile up.

The scripts that use it run as modules from the repository root (``python -m loadtest.…``).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from passcode.config import Settings
from passcode.wiring import REDIS_STARTUP_WAIT, open_cache, until_answering


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` on the same server, with the same credentials."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql, timeout=300)  # dropping a database of 10M scans takes a while
    finally:
        await conn.close()


async def create_database(url: str, kind: str) -> str:
    """A new, empty database ``passcode_<kind>_<random>`` on ``url``'s server; its name."""
    name = f"passcode_{kind}_{secrets.token_hex(4)}"
    await _execute(url, f'CREATE DATABASE "{name}"')
    return name


async def drop_database(url: str, name: str) -> None:
    """Drop ``name`` (made by :func:`create_database`), ending its sessions, from ``postgres``."""
    await _execute(with_database(url, "postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def forget_prefix(client: Any, prefix: str) -> None:
    """Delete every Redis key under ``prefix:`` (statuses, dedupe marks, streams), in batches."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


async def redis_answering(settings: Settings) -> None:
    """Return once the settings' Redis answers commands (a Redis just started or restarted
    refuses them with LOADING while it reads its append-only file); fail past the deadline."""
    cache = open_cache(settings)
    try:
        await until_answering(cache, deadline=time.monotonic() + REDIS_STARTUP_WAIT)
    finally:
        await cache.close()


@asynccontextmanager
async def throwaway_stores(settings: Settings, kind: str) -> AsyncIterator[Settings]:
    """``settings`` pointed at a new database (:func:`create_database`) on the same server and at
    a new Redis prefix ``<kind>-<random>``, once Redis answers; afterwards the prefix's keys are deleted and the
    database dropped, whatever happened inside."""
    server = settings.database_url
    assert server is not None
    await redis_answering(settings)
    name = await create_database(server, kind)
    inside = dataclasses.replace(
        settings,
        database_url=with_database(server, name),
        redis_prefix=f"{kind}-{secrets.token_hex(4)}",
    )
    try:
        yield inside
    finally:
        cache = open_cache(inside)
        try:
            await forget_prefix(cache.client, inside.redis_prefix)
        finally:
            await cache.close()
            await drop_database(server, name)
