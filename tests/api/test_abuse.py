"""Abuse limits (issue 4): rate limits per terminal and per citizen kept in Redis (GCRA, one
script call riding in the verify's own write), an in-process fallback when Redis is down, and
load shedding that drops pass issuance before verify when the process is saturated."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from passcode.api.openapi import openapi_document
from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import CACHE, SHEDDER, TERMINAL_LIMITS
from passcode.testing import HEALTHY, auth
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ON_CLUSTER,
    PROBLEM,
    Client,
    ClientFactory,
    Contract,
    TokenFactory,
    declare,
    fetch_pass,
    new_terminal,
    redis_client,
)

# Counts or patches the one-node Transport's pipelines; the cluster transport routes each node's
# share through one of these (tests/integration/test_cluster_transport.py).
ONE_NODE = pytest.mark.skipif(ON_CLUSTER, reason="the one-node Transport's own batching")

CONTRACT = Contract(openapi_document())


async def assert_limited(response: Any) -> None:
    """429 problem `rate-limited` with Retry-After, as the OpenAPI document declares it."""
    await CONTRACT.check(response)
    body = await response.json(content_type=None)
    assert response.status == 429, body
    assert response.content_type == PROBLEM
    assert body["type"].endswith("/rate-limited")
    assert int(response.headers["Retry-After"]) >= 1


async def assert_shed(response: Any) -> None:
    """503 problem `overloaded` with Retry-After, as the OpenAPI document declares it."""
    await CONTRACT.check(response)
    body = await response.json(content_type=None)
    assert response.status == 503, body
    assert response.content_type == PROBLEM
    assert body["type"].endswith("/overloaded")
    assert int(response.headers["Retry-After"]) >= 1


async def redis_keys(settings: Settings, pattern: str) -> list[str]:
    client = redis_client(settings)
    try:
        return [k.decode() async for k in client.scan_iter(match=pattern, count=1000)]
    finally:
        await client.aclose()


# --- rate limits ----------------------------------------------------------------------------


async def test_citizen_over_its_rate_is_429_and_other_citizens_are_not(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Citizen limit (burst 3, then one per 100 s): declare + two passes pass, the fourth request
    (JSON or image) is 429 with Retry-After; another citizen still declares and gets a pass."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, citizen_rate=0.01, citizen_burst=3))
    )
    token = make_token()
    await declare(client, token)
    await fetch_pass(client, token)
    await fetch_pass(client, token)
    for path in ("/v1/pass", "/v1/pass.png"):
        limited = await client.get(path, headers=auth(token))
        await assert_limited(limited)
        assert int(limited.headers["Retry-After"]) > 50  # a unit every 100 s
    await assert_limited(await client.post("/v1/declarations", json=HEALTHY, headers=auth(token)))

    other = make_token()
    await declare(client, other)
    await fetch_pass(client, other)


async def test_citizen_limit_is_shared_by_processes_through_redis(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Two service instances on the same Redis share one budget per citizen (burst 3): after the
    first spent it, the second serves one request (its limit answer rides along with it, from
    which it learns the budget is gone) and refuses the next, though it served only one itself.
    The budget lives in one key `{prefix}:{<shard>}:rl:c:<user hash>`."""
    tight = dataclasses.replace(settings, citizen_rate=0.01, citizen_burst=3)
    first = await aiohttp_client(create_app(tight))
    second = await aiohttp_client(create_app(tight))
    token = make_token()
    await declare(first, token)
    await fetch_pass(first, token)
    await fetch_pass(first, token)
    await assert_limited(await first.get("/v1/pass", headers=auth(token)))
    await fetch_pass(second, token)
    await assert_limited(await second.get("/v1/pass", headers=auth(token)))

    keys = await redis_keys(settings, f"{settings.redis_prefix}:*:rl:c:*")
    assert len(keys) == 1, keys
    assert re.fullmatch(
        re.escape(settings.redis_prefix) + r":\{\d+\}:rl:c:[0-9a-f]{64}", keys[0]
    ), keys


async def test_terminal_limit_is_shared_by_processes_through_redis(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Terminal limit (burst 2) in Redis: after two verifies on one instance the third is 429
    there, and a batch on a second instance is 429 too; the key is `…:{<shard>}:rl:t:<id>`."""
    tight = dataclasses.replace(settings, terminal_rate=0.01, terminal_burst=2)
    first = await aiohttp_client(create_app(tight))
    second = await aiohttp_client(create_app(tight))
    terminal_id, key = await new_terminal(first, "Gate B")
    token = make_token()
    await declare(first, token)
    code = await fetch_pass(first, token)
    for _ in range(2):
        ok = await first.post("/v1/verify", json={"code": code}, headers=auth(key))
        assert ok.status == 200, await ok.text()
        assert (await ok.json())["decision"] == "admit"
    await assert_limited(await first.post("/v1/verify", json={"code": code}, headers=auth(key)))
    await assert_limited(
        await second.post("/v1/verify/batch", json={"scans": [{"code": code}]}, headers=auth(key))
    )

    keys = await redis_keys(settings, f"{settings.redis_prefix}:{{*}}:rl:t:{terminal_id}")
    assert len(keys) == 1, keys
    shard = first.app[CACHE].shard_of(uuid.UUID(terminal_id).bytes)
    assert keys[0] == f"{settings.redis_prefix}:{{{shard}}}:rl:t:{terminal_id}"


@ONE_NODE
async def test_a_verify_and_its_rate_limit_share_one_redis_write(
    client: Client, make_token: TokenFactory, terminal_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip per verify: the GCRA call and the verify script are sent in the same batch
    (one write on one connection). The batcher's send is observed, not replaced."""
    token = make_token()
    await declare(client, token)
    code = await fetch_pass(client, token)
    cache = client.app[CACHE]
    batcher = cache.transport
    sent: list[list[tuple[object, ...]]] = []
    # private: the transport's send is observed (not replaced) to count the writes on the wire
    original = batcher._send

    async def observed(batch: list[tuple[tuple[object, ...], Any]], timeout: Any = None) -> None:
        if timeout is None:  # the coalesced batch (a pipeline of its own has a deadline given)
            sent.append([command for command, _ in batch])
        await original(batch, timeout)

    monkeypatch.setattr(batcher, "_send", observed)
    response = await client.post("/v1/verify", json={"code": code}, headers=auth(terminal_key))
    assert response.status == 200, await response.text()
    assert (await response.json())["decision"] == "admit"

    # private: the scripts' SHAs name the commands seen on the wire
    shas = {cache._verify.sha: "verify", cache._gcra.sha: "gcra"}
    kinds = [[shas.get(str(c[1]), str(c[0])) for c in batch] for batch in sent]
    assert kinds == [["gcra", "verify"]], kinds


async def test_redis_down_limits_fall_back_to_each_process(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """Redis unreachable: verify and pass issuance go on from Postgres, and the limits still hold
    per process (in-process token buckets): the third verify and the third pass are 429."""
    assert settings.redis_url is not None
    proxy = await proxies(settings.redis_url)
    client = await aiohttp_client(
        create_app(
            dataclasses.replace(
                settings,
                redis_url=proxy.url(settings.redis_url),
                drain_enabled=False,
                terminal_rate=0.01,
                terminal_burst=2,
                citizen_rate=0.01,
                citizen_burst=4,
            )
        )
    )
    try:
        _, key = await new_terminal(client, "Gate B")
        token = make_token()
        await declare(client, token)  # spends one unit of the Redis budget
        code = await fetch_pass(client, token)  # and a second
        await proxy.cut()

        async with asyncio.timeout(20):
            for _ in range(2):
                ok = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
                assert ok.status == 200, await ok.text()
                assert (await ok.json())["decision"] == "admit"
            await assert_limited(
                await client.post("/v1/verify", json={"code": code}, headers=auth(key))
            )
            for _ in range(4):  # the fallback starts with a full burst of its own
                got = await client.get("/v1/pass", headers=auth(token))
                assert got.status == 200, await got.text()
            await assert_limited(await client.get("/v1/pass", headers=auth(token)))
    finally:
        await proxy.cut()
        await client.close()


# --- load shedding ----------------------------------------------------------------------------


async def hold(client: Client, method: str, path: str, token: str) -> asyncio.StreamWriter:
    """Start a request whose body never comes: it stays in flight until the writer closes."""
    server = client.server
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        (
            f"{method} {path} HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{"
        ).encode()
    )
    await writer.drain()
    return writer


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded: 10 s) for a state of the service, polling it."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def until_in_flight(client: Client, count: int) -> None:
    await eventually(lambda: client.app[SHEDDER].in_flight >= count)


async def test_saturated_process_sheds_issuance_before_verify(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Thresholds 1 (issuance) and 3 (verify): with one declaration stuck in flight, pass
    issuance and declarations are refused at once (503 overloaded + Retry-After) while verify
    still admits; with three in flight verify is shed too; once they end, all is served again."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, shed_issue_inflight=1, shed_verify_inflight=3))
    )
    _, key = await new_terminal(client, "Gate B")
    token = make_token()
    await declare(client, token)
    code = await fetch_pass(client, token)

    held = [await hold(client, "POST", "/v1/declarations", make_token())]
    try:
        await until_in_flight(client, 1)
        for path in ("/v1/pass", "/v1/pass.png", "/v1/pass.svg"):
            await assert_shed(await client.get(path, headers=auth(token)))
        await assert_shed(await client.post("/v1/declarations", json=HEALTHY, headers=auth(token)))
        admitted = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
        assert admitted.status == 200, await admitted.text()
        assert (await admitted.json())["decision"] == "admit"
        batch = await client.post(
            "/v1/verify/batch", json={"scans": [{"code": code}]}, headers=auth(key)
        )
        assert batch.status == 200, await batch.text()

        held.append(await hold(client, "POST", "/v1/verify", key))
        held.append(await hold(client, "POST", "/v1/verify", key))
        await until_in_flight(client, 3)
        await assert_shed(await client.post("/v1/verify", json={"code": code}, headers=auth(key)))
        assert client.app[SHEDDER].shed[0] >= 4
        assert client.app[SHEDDER].shed[1] >= 1
    finally:
        for writer in held:
            writer.close()
    await eventually(lambda: client.app[SHEDDER].in_flight == 0)
    assert (await client.get("/v1/pass", headers=auth(token))).status == 200
    again = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert again.status == 200, await again.text()


async def test_a_late_event_loop_sheds_issuance_but_not_verify(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Loop lag above `shed_issue_lag` (the loop is blocked on purpose) sheds pass issuance with
    503 while verify is still answered; when the lag is gone, passes are served again."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, shed_issue_lag=0.2, shed_lag_interval=0.05))
    )
    _, key = await new_terminal(client, "Gate B")
    token = make_token()
    await declare(client, token)
    code = await fetch_pass(client, token)
    shedder = client.app[SHEDDER]

    statuses = []
    for _ in range(20):  # bounded: each try blocks the loop once, then asks at once
        time.sleep(0.3)  # noqa: ASYNC251  # the point: the event loop is late
        response = await client.get("/v1/pass", headers=auth(token))
        statuses.append(response.status)
        if response.status == 503:
            await assert_shed(response)
            break
    assert 503 in statuses, statuses
    time.sleep(0.3)  # noqa: ASYNC251
    verified = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert verified.status == 200, await verified.text()

    await eventually(lambda: shedder.lag < 0.2)
    assert (await client.get("/v1/pass", headers=auth(token))).status == 200


@ONE_NODE
async def test_a_lease_of_units_serves_many_verifies_and_the_limit_stays_exact(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Burst 40 (lease of 2 units): one GCRA call per two verifies, all 40 in the burst are
    admitted, the 41st is 429, and a second instance finds the budget spent in Redis."""
    tight = dataclasses.replace(settings, terminal_rate=0.01, terminal_burst=40)
    client = await aiohttp_client(create_app(tight))
    other = await aiohttp_client(create_app(tight))
    _, key = await new_terminal(client, "Gate B")
    token = make_token()
    await declare(client, token)
    code = await fetch_pass(client, token)
    cache = client.app[CACHE]
    calls: list[object] = []
    # private: the transport's send is observed (not replaced) to read each GCRA call's cost
    original = cache.transport._send

    async def observed(batch: list[tuple[tuple[object, ...], Any]], timeout: Any = None) -> None:
        calls.extend(c[7] for c, _ in batch if c[1] == cache._gcra.sha)  # the cost argument
        await original(batch, timeout)

    monkeypatch.setattr(cache.transport, "_send", observed)
    for _ in range(40):
        ok = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
        assert ok.status == 200, await ok.text()
        assert (await ok.json())["decision"] == "admit"
    assert calls == [2] * 20, calls
    await assert_limited(await client.post("/v1/verify", json={"code": code}, headers=auth(key)))
    await assert_limited(
        await other.post("/v1/verify/batch", json={"scans": [{"code": code}]}, headers=auth(key))
    )


@ONE_NODE
async def test_verifies_in_one_turn_spend_the_lease_being_asked_for_with_one_gcra_call(
    aiohttp_client: ClientFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Burst 1000 (lease of 50 units): 50 verifies arriving in the same event-loop turn send one
    GCRA call for 50 units, not 50 calls; the 51st asks for the next lease, whose other 49
    units are left to spend once its answer is in; Redis is charged the 100 units leased."""
    tight = dataclasses.replace(settings, terminal_rate=0.01, terminal_burst=1000)
    client = await aiohttp_client(create_app(tight))
    limits = client.app[TERMINAL_LIMITS]
    cache = client.app[CACHE]
    costs: list[int] = []
    # private: the transport's send is observed (not replaced) to read each GCRA call's cost
    original = cache.transport._send

    async def observed(batch: list[tuple[tuple[object, ...], Any]], timeout: Any = None) -> None:
        costs.extend(int(str(c[7])) for c, _ in batch if c[1] == cache._gcra.sha)
        await original(batch, timeout)

    monkeypatch.setattr(cache.transport, "_send", observed)
    ident = uuid.uuid4()
    key = limits.key(ident.bytes, str(ident))
    assert all(limits.speculate(key) for _ in range(51))  # one turn: no await in between
    # private: the lease's settlement and size are the behaviour under test; no
    # public API exposes them
    await asyncio.wait_for(limits._settled(key).wait(), 5)  # both answers are in
    assert costs == [50, 50], costs
    assert limits._leases[key][0] == 49
    tat = float(await cache.client.get(key))
    assert tat == pytest.approx(time.time() * 1000 + 100 * limits.interval_ms, abs=5_000)


async def test_a_concurrent_flood_from_one_terminal_gets_exactly_its_burst(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """20 verifies at once from one terminal with a burst of 5: exactly 5 are served (200), the
    other 15 are 429 — speculation never lets concurrency outrun the limit within a process."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, terminal_rate=0.01, terminal_burst=5))
    )
    _, key = await new_terminal(client, "Gate B")
    token = make_token()
    await declare(client, token)
    code = await fetch_pass(client, token)

    async def one() -> int:
        response = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
        if response.status == 429:
            await assert_limited(response)
        return response.status

    statuses = await asyncio.gather(*(one() for _ in range(20)))
    assert sorted(statuses) == [200] * 5 + [429] * 15, statuses
