"""The live status's freshness boundary, through the service: a status holds up to, not
including, its ``valid_until`` (:func:`passcode.domain.status.is_fresh`), on every path."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.api.responses import rfc3339
from passcode.app import create_app
from passcode.config import Settings
from tests.conftest import ADMIN, HEALTHY, TokenFactory, auth

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


class FakeClock:
    """A clock the test sets by hand, near the real time (ID tokens are dated by the real one)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


async def test_verify_at_valid_until_does_not_admit_from_the_expiring_copy(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A green status whose ``valid_until`` is the start of a red override: scanned at exactly
    that second, the cached green copy no longer decides (verify re-derives: red, deny), as
    ``GET /v1/pass`` already refreshed there. Before one owner held the rule, verify's script
    admitted at ``valid_until == now``."""
    clock = FakeClock(float(int(time.time())))
    client = await aiohttp_client(create_app(dataclasses.replace(settings, clock=clock)))
    created = await client.post("/v1/admin/terminals", json={"place": "Gate B"}, headers=ADMIN)
    assert created.status == 201, await created.text()
    key = (await created.json())["key"]
    user_id = f"user-{uuid.uuid4().hex}"
    token = make_token(user_id)
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    clock.at += 100  # the signing key made at start-up is active well before the pass
    got = await client.get("/v1/pass", headers=auth(token))
    assert got.status == 200, await got.text()
    code = (await got.json())["code"]

    red_from = clock.at + 30
    ruled = await client.post(
        "/v1/admin/overrides",
        json={
            "user_id": user_id,
            "color": "red",
            "reason": "quarantine",
            "valid_from": rfc3339(red_from),
        },
        headers=ADMIN,
    )
    assert ruled.status == 201, await ruled.text()
    status = (await ruled.json())["status"]
    assert (status["color"], status["version"]) == ("green", 1)  # the pass is still current
    assert status["valid_until"] == rfc3339(red_from)

    async def scan() -> dict[str, Any]:
        response = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    clock.at = red_from - 1
    assert (await scan())["decision"] == "admit"
    clock.at = red_from
    assert (await scan())["decision"] == "deny"
