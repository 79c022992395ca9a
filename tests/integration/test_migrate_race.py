"""Several replicas starting at once on an empty database all migrate it: one applies each
migration, the others wait for it and apply none (no duplicate-key failure on the first table)."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from passcode.store import pg


async def test_four_replicas_migrating_an_empty_database_at_once_apply_each_migration_once(
    base_database_url: str,
) -> None:
    name = f"passcode_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_database_url, timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"', timeout=30)
    url = urlunsplit(urlsplit(base_database_url)._replace(path=f"/{name}"))
    pools = [await pg.create_pool(url, timeout=10, min_size=1, max_size=1) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(pg.migrate(pool) for pool in pools))
        everything = [m for run in applied for m in run]
        assert sorted(everything) == sorted(set(everything))
        assert len(everything) == len(pg._migrations())
    finally:
        for pool in pools:
            await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        await admin.close()
