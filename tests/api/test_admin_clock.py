"""The admin use cases and /v1/keys read "now" from ``Settings.clock`` (issue 12):
each test runs the service on a clock set away from the wall clock and sees that clock's now."""

from __future__ import annotations

import base64
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from passcode.api.responses import rfc3339
from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import POOL
from passcode.store.keyring import add_key
from tests.helpers import ADMIN, ClientFactory

DAY = 24 * 3600


async def on_clock(aiohttp_client: ClientFactory, settings: Settings, at: float) -> Any:
    """The service on a clock stopped at ``at`` (a Clock is anything with ``now()``)."""
    clock = SimpleNamespace(now=lambda: at)
    return await aiohttp_client(create_app(dataclasses.replace(settings, clock=clock)))


async def test_the_audit_log_reads_its_default_window_up_to_the_clock(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """Without ``until`` the audit read ends at the clock's now (recorded in its own entry)."""
    at = float(int(time.time()) + 30 * DAY)
    client = await on_clock(aiohttp_client, settings, at)
    read = await client.get("/v1/admin/audit?action=audit.read", headers=ADMIN)
    assert read.status == 200, await read.text()
    target = await client.app[POOL].fetchval(
        "SELECT target ->> 'until' FROM audit_log WHERE action = 'audit.read' ORDER BY id DESC"
        " LIMIT 1"
    )
    assert target == rfc3339(at)


async def test_a_risk_place_window_is_in_the_future_by_the_clock(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """A window that ended a minute ago by the wall clock is still to come on a clock two days
    behind: refused, naming until."""
    client = await on_clock(aiohttp_client, settings, float(int(time.time()) - 2 * DAY))
    wall = datetime.now(UTC)
    body = {
        "place": "Clock Mall",
        "since": (wall - timedelta(hours=1)).isoformat(),
        "until": (wall - timedelta(minutes=1)).isoformat(),
        "note": "clock",
    }
    refused = await client.post("/v1/admin/risk-places", json=body, headers=ADMIN)
    assert refused.status == 400, await refused.text()
    assert (await refused.json())["errors"] == ["until"]


async def test_an_override_starts_at_the_clock(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """An override without ``valid_from`` is valid from the clock's now."""
    at = float(int(time.time()) - DAY)
    client = await on_clock(aiohttp_client, settings, at)
    override = {"user_id": "clock-override", "color": "red", "reason": "positive_test"}
    made = await client.post("/v1/admin/overrides", json=override, headers=ADMIN)
    assert made.status == 201, await made.text()
    start = await client.app[POOL].fetchval(
        "SELECT valid_from FROM overrides WHERE id = $1", (await made.json())["override_id"]
    )
    assert start == datetime.fromtimestamp(at, UTC)


async def test_published_keys_are_those_of_the_clock(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """A key retired (its successor active, every token it signed expired) by the clock's now
    is no longer published, though by the wall clock the successor is still upcoming."""
    wall = int(time.time())
    add_key(settings.key_dir, activates_at=wall - 100)
    successor = add_key(settings.key_dir, activates_at=wall + 100)
    client = await on_clock(aiohttp_client, settings, float(wall + DAY))
    published = await client.get("/v1/keys")
    assert published.status == 200
    kids = [key["kid"] for key in (await published.json())["keys"]]
    assert kids == [base64.urlsafe_b64encode(successor.kid).rstrip(b"=").decode()]
