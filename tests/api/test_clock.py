"""The injectable clock (issue 4): verify, pass issuance and the status rules read "now" from
``Settings.clock``; tests drive it to both sides of the pass window's clock-skew edges."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.api.responses import rfc3339
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.keys import CITIZENS, VERIFIER
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, FakeClock, TokenFactory

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


async def setup(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> tuple[Client, FakeClock, str, dict[str, Any]]:
    """A service on a fake clock, a terminal, and a green pass issued 100 s after start-up."""
    clock = FakeClock(float(int(time.time())))
    client = await aiohttp_client(create_app(dataclasses.replace(settings, clock=clock)))
    created = await client.post("/v1/admin/terminals", json={"place": "Gate C"}, headers=ADMIN)
    assert created.status == 201, await created.text()
    key = (await created.json())["key"]
    token = make_token()
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    assert (await declared.json())["declaration_id"]
    clock.at += 100  # the signing key made at start-up is active well before the pass
    got = await client.get("/v1/pass", headers=auth(token))
    assert got.status == 200, await got.text()
    return client, clock, key, await got.json()


async def verify(client: Client, key: str, code: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/verify", json={"code": code, **extra}, headers=auth(key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def test_the_system_clock_is_time_time_without_a_bound_method() -> None:
    """The real clock's `now` is `time.time` itself: the hot path's call allocates nothing."""
    assert SYSTEM_CLOCK.now is time.time
    assert Settings().clock is SYSTEM_CLOCK
    assert " clock=" not in repr(Settings())
    clock: Clock = FakeClock(5.0)
    assert clock.now() == 5.0


async def test_services_read_the_configured_clock(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Pass issuance and verify use the injected clock: the pass is dated by it, and so are the
    declaration and the live status (the rules' "now")."""
    client, clock, _, view = await setup(aiohttp_client, settings, make_token)
    assert client.app[VERIFIER].clock is clock
    assert client.app[CITIZENS].clock is clock
    assert view["issued_at"] == rfc3339(clock.at)
    assert view["expires_at"] == rfc3339(clock.at + settings.pass_ttl)


async def test_expiry_is_judged_with_the_skew_on_the_servers_clock(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """At exactly expiry + skew the pass is admitted; one second later it is `expired`."""
    client, clock, key, view = await setup(aiohttp_client, settings, make_token)
    expires = clock.at + settings.pass_ttl
    clock.at = expires + settings.clock_skew
    edge = await verify(client, key, view["code"])
    assert (edge["decision"], edge["reason"]) == ("admit", "ok"), edge
    clock.at += 1
    late = await verify(client, key, view["code"])
    assert (late["decision"], late["reason"]) == ("invalid", "expired"), late


async def test_a_pass_from_the_future_is_admitted_only_within_the_skew(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """issued_at up to the skew ahead of the server's clock is admitted; beyond it the pass is
    `not_yet_valid`."""
    client, clock, key, view = await setup(aiohttp_client, settings, make_token)
    issued = clock.at
    clock.at = issued - settings.clock_skew
    edge = await verify(client, key, view["code"])
    assert (edge["decision"], edge["reason"]) == ("admit", "ok"), edge
    clock.at -= 1
    early = await verify(client, key, view["code"])
    assert (early["decision"], early["reason"]) == ("invalid", "not_yet_valid"), early


async def test_a_terminal_with_a_skewed_clock_gets_the_servers_time_and_judgement(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """`scanned_at` 20 s off the server's clock changes nothing: the answer carries the server's
    time, and the window is judged on the server's clock — a pass the terminal thinks valid is
    expired, and one the terminal thinks expired is admitted."""
    client, clock, key, view = await setup(aiohttp_client, settings, make_token)
    limit = clock.at + settings.pass_ttl + settings.clock_skew

    def terminal_time(offset: float) -> str:
        return datetime.fromtimestamp(clock.at + offset, UTC).isoformat().replace("+00:00", "Z")

    clock.at = limit  # still valid on the server; the terminal, 20 s ahead, thinks it expired
    ahead = await verify(client, key, view["code"], scanned_at=terminal_time(20))
    assert (ahead["decision"], ahead["reason"]) == ("admit", "ok"), ahead
    assert ahead["server_time"] == rfc3339(clock.at)

    clock.at = limit + 10  # expired on the server; the terminal, 20 s behind, thinks it valid
    behind = await verify(client, key, view["code"], scanned_at=terminal_time(-20))
    assert (behind["decision"], behind["reason"]) == ("invalid", "expired"), behind
    assert behind["server_time"] == rfc3339(clock.at)


async def test_verify_at_valid_until_does_not_admit_from_the_expiring_copy(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A status holds up to, not including, its ``valid_until`` on every path: a green status
    whose ``valid_until`` is the start of a red override, scanned at exactly that second, no
    longer decides from the cached green copy (verify re-derives: red, deny), as
    ``GET /v1/pass`` already refreshed there. Verify's script used to admit at ``valid_until ==
    now``."""
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

    clock.at = red_from - 1
    assert (await verify(client, key, code))["decision"] == "admit"
    clock.at = red_from
    assert (await verify(client, key, code))["decision"] == "deny"


async def test_id_tokens_are_judged_by_the_configured_clock(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A citizen's ID token is valid by the service's clock, not the wall clock: the same
    token is refused once the fake clock passes its expiry (plus the leeway), though the wall
    clock has not moved."""
    client, clock, _, _ = await setup(aiohttp_client, settings, make_token)
    token = make_token()
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    assert (await client.get("/v1/pass", headers=auth(token))).status == 200
    clock.at += 10 * 86_400
    refused = await client.get("/v1/pass", headers=auth(token))
    assert refused.status == 401, await refused.text()
