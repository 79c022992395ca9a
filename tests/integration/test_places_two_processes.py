"""Two ``passcode serve`` processes on one database: a place policy set through one is the
policy the other judges scans by within a few seconds (the catalog watcher's 1 s poll)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import ADMIN_KEY, RUN_ID
from tests.live_server import LiveServer, live_settings

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}{RUN_ID}"}


@pytest.fixture
def servers(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[LiveServer, LiveServer]]:
    pair = []
    for tag in ("pa", "pb"):
        folder = tmp_path / tag
        folder.mkdir()
        settings = live_settings(database_url, redis_url, redis_prefix, folder, tag=tag)
        pair.append(LiveServer(settings, folder / "serve.log"))
    try:
        for server in pair:
            server.start()
        yield pair[0], pair[1]
    finally:
        for server in pair:
            server.stop()


async def _shown(session: aiohttp.ClientSession, server: LiveServer, place: str) -> Any:
    async with session.get(f"{server.url}/v1/admin/places/{place}", headers=HEADERS) as answer:
        assert answer.status == 200
        return (await answer.json())["policy"]


async def _until(
    session: aiohttp.ClientSession, server: LiveServer, place: str, source: str, version: int
) -> float:
    """Seconds until ``server`` shows the place's policy from ``source`` at ``version``."""
    started = time.monotonic()
    while time.monotonic() - started < 10:
        policy = await _shown(session, server, place)
        if (policy["source"], policy["version"]) == (source, version):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"{server.url} still shows {policy['source']} v{policy['version']} after 10 s")


async def test_policy_set_through_one_process_is_used_by_the_other(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    """A: create a place, set its type's policy, then its own; B follows each change within
    a few seconds, and A (which made them) at once."""
    a, b = servers
    place, kind = f"gate-{uuid.uuid4().hex[:8]}", f"metro-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        put = await session.put(
            f"{a.url}/v1/admin/places/{place}",
            json={"type": kind, "name": "Metro gate"},
            headers=HEADERS,
        )
        assert put.status == 201
        assert (await _shown(session, b, place))["source"] == "default"

        typed = await session.put(
            f"{a.url}/v1/admin/place-types/{kind}/policy",
            json={"accepts": ["passcode", "card"], "rules": []},
            headers=HEADERS,
        )
        assert typed.status == 200
        assert (await _shown(session, a, place))["source"] == "type"
        lag_type = await _until(session, b, place, "type", 1)

        own = await session.put(
            f"{a.url}/v1/admin/places/{place}/policy",
            json={"accepts": ["passcode"], "rules": []},
            headers=HEADERS,
        )
        assert own.status == 200
        lag_place = await _until(session, b, place, "place", 1)
        assert (await _shown(session, b, place))["accepts"] == ["passcode"]
    assert lag_type < 5
    assert lag_place < 5
