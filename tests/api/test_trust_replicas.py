"""Two ``passcode serve`` processes on one PostgreSQL and Redis (issue 14): a trust-store change
made through one reaches the other's ``GET /v1/trust`` within a few seconds (its catalog
watcher polls the versions every second), an import and a removal alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import ADMIN_KEY, RUN_ID
from tests.live_server import LiveServer, live_settings
from tests.trust_material import b64, dsc, kid64

REACH = 5.0  # s: the watcher polls every second; a loaded machine gets some slack


@pytest.fixture
async def replicas(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    servers = []
    for tag in ("ta", "tb"):
        folder = tmp_path / tag
        folder.mkdir()
        settings = live_settings(database_url, redis_url, redis_prefix, folder, tag=tag)
        servers.append(LiveServer(settings, folder / "server.log"))
    try:
        # One after the other: two first starts on a fresh database would race to create the
        # migrations table.
        for server in servers:
            await asyncio.to_thread(server.start)
        yield servers[0], servers[1]
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


async def _kids(session: aiohttp.ClientSession, server: LiveServer) -> set[str]:
    async with session.get(f"{server.url}/v1/trust") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
    return {entry["kid"] for entry in body["dcc"]}


async def _until(
    session: aiohttp.ClientSession, server: LiveServer, kid: str, *, present: bool
) -> float:
    """Seconds until ``kid`` is (or is no longer) in the server's document; fails past REACH."""
    started = time.monotonic()
    while time.monotonic() - started < REACH:
        if (kid in await _kids(session, server)) == present:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"{kid} {'not' if present else 'still'} published after {REACH} s")


async def test_a_signer_imported_through_one_replica_reaches_the_other(
    replicas: tuple[LiveServer, LiveServer],
) -> None:
    """Imported through A: in A's document at once, in B's within REACH seconds; removed
    through B: gone from A's within REACH seconds."""
    a, b = replicas
    der = dsc()
    kid = kid64(der)
    admin = {"Authorization": f"Bearer {ADMIN_KEY + RUN_ID}"}
    async with aiohttp.ClientSession() as session:
        assert kid not in await _kids(session, b)
        async with session.post(
            f"{a.url}/v1/admin/trust/dcc", json={"certificates": [b64(der)]}, headers=admin
        ) as response:
            assert response.status == 200, await response.text()
        assert kid in await _kids(session, a)
        reached = await _until(session, b, kid, present=True)

        url_safe = kid.replace("+", "-").replace("/", "_").rstrip("=")
        async with session.delete(
            f"{b.url}/v1/admin/trust/dcc/{url_safe}", headers=admin
        ) as response:
            assert response.status == 204
        assert kid not in await _kids(session, b)
        removed = await _until(session, a, kid, present=False)
    print(f"trust change reached the other replica in {reached:.2f} s, removal in {removed:.2f} s")
