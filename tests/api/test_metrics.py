"""``GET /metrics``: the counts after a known flow are exact, and under ``--workers 2`` they
are both workers' totals whichever worker a scrape reaches; the request id is echoed."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import DRAIN
from passcode.testing import HEALTHY
from tests.api.proxy import TcpProxy
from tests.helpers import TokenFactory, auth, declare, fetch_pass, new_terminal
from tests.live_server import LiveServer, live_settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape(client: TestClient[Any, Any]) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return parse(await response.text())


async def test_a_known_flow_is_counted_exactly(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory
) -> None:
    """Declare, pass, verifies with known answers (admit, deny, invalid) and rate-limited ones:
    the scrape's deltas equal what the client saw, request by route template and status,
    decision by reason, the verify and pass latency counts, the 429s as rate-limited, the drain's
    stored rows once it has moved the recorded scans; the states are there (pool, backlog per
    shard, signing keys, nothing shed)."""
    tight = replace(settings, terminal_rate=0.001, terminal_burst=6.0)
    client = await aiohttp_client(create_app(tight))
    before = await scrape(client)
    _, key = await new_terminal(client)
    green, red = make_token(), make_token()
    await declare(client, green)
    await declare(client, red, {**HEALTHY, "temperature_c": 39.5})
    codes = [await fetch_pass(client, green), await fetch_pass(client, red)]
    codes.append(codes[0][:-4] + ("AAAA" if not codes[0].endswith("AAAA") else "BBBB"))
    codes.append("PC1:NOT-A-PASS")
    seen: Counter[tuple[str, str, str]] = Counter()  # (method, route, status)
    decided: Counter[tuple[str, str]] = Counter()
    limited = 0
    for n in range(12):
        response = await client.post("/v1/verify", json={"code": codes[n % 4]}, headers=auth(key))
        seen["POST", "/v1/verify", str(response.status)] += 1
        body = await response.json(content_type=None)
        if response.status == 200:
            decided[body["decision"], body["reason"]] += 1
        else:
            assert response.status == 429, body
            limited += 1
    assert limited > 0
    assert {d for d, _ in decided} == {"admit", "deny", "invalid"}
    after = await scrape(client)

    for (method, route, status), count in seen.items():
        got = delta(before, after, "passcode_http_requests_total", method=method, route=route, status=status)  # fmt: skip
        assert got == count, (method, route, status)
    for route, status, count in (
        ("/v1/admin/terminals", "201", 1),
        ("/v1/declarations", "201", 2),
        ("/v1/pass", "200", 2),
        ("/metrics", "200", 1),  # the first scrape
    ):
        method = "POST" if route not in {"/v1/pass", "/metrics"} else "GET"
        got = delta(before, after, "passcode_http_requests_total", method=method, route=route, status=status)  # fmt: skip
        assert got == count, route
    for (decision, reason), count in decided.items():
        got = delta(before, after, "passcode_verify_decisions_total", decision=decision, reason=reason)  # fmt: skip
        assert got == count, (decision, reason)
    timed = "passcode_http_request_duration_seconds_count"
    assert delta(before, after, timed, route="/v1/verify") == 12
    assert delta(before, after, timed, route="/v1/pass") == 2
    assert delta(before, after, timed, route="/v1/admin/terminals") == 0  # not a timed route
    assert delta(before, after, "passcode_rate_limited_total", limit="terminal") == limited
    assert delta(before, after, "passcode_redis_batch_commands_count") > 0
    assert delta(before, after, "passcode_pg_acquire_wait_seconds_count") > 0
    assert value(after, "passcode_shed_requests_total", **{"class": "verify"}) == 0
    assert value(after, "passcode_pg_pool_max_connections") == tight.pg_pool_max
    assert value(after, "passcode_signing_keys_published") >= 1
    assert value(after, "passcode_signing_key_age_seconds") >= 0
    for shard in range(tight.scan_shards):
        assert ("passcode_scan_stream_backlog", frozenset({("shard", str(shard))})) in after

    recorded = decided["admit", "ok"] + sum(n for (d, _), n in decided.items() if d == "deny")
    await client.app[DRAIN].drain_all()
    drained = await scrape(client)
    assert delta(before, drained, "passcode_drain_rows_total", outcome="stored") >= recorded
    assert sum(v for (n, _), v in drained.items() if n == "passcode_scan_stream_backlog") == 0


async def test_the_request_id_is_echoed_when_sane_and_made_otherwise(
    client: TestClient[Any, Any],
) -> None:
    """A short id of safe characters comes back as sent; one too long, with other characters
    or shaped like a terminal key is replaced by a made one (which differs per request)."""
    sane = "req-" + uuid.uuid4().hex
    response = await client.get("/healthz", headers={"X-Request-Id": sane})
    assert response.headers["X-Request-Id"] == sane
    made = set()
    for given in ("x" * 65, "a b", "pt_" + uuid.uuid4().hex, ""):
        response = await client.get("/healthz", headers={"X-Request-Id": given})
        echoed = response.headers["X-Request-Id"]
        assert echoed != given
        made.add(echoed)
    unrouted = await client.get("/nowhere")
    assert unrouted.status == 404
    made.add(unrouted.headers["X-Request-Id"])
    assert len(made) == 5


@pytest.fixture
async def two_workers(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[LiveServer]:
    settings = live_settings(database_url, redis_url, redis_prefix, tmp_path, tag="metrics")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = LiveServer(
        settings, tmp_path / "server.log", extra_env={"TMPDIR": str(scratch)}, args=("--workers", "2")
    )  # fmt: skip
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.slow
async def test_two_workers_answer_both_workers_totals(two_workers: LiveServer) -> None:
    """Requests, each on a connection of its own, until both workers have answered (the
    kernel spreads connections over them: their made request ids have two prefixes), then
    scrapes until each worker has answered one: both count every request sent, the two
    workers' totals. After the stop the run's shared metrics
    directory is gone."""
    connector = aiohttp.TCPConnector(force_close=True)
    prefixes = set()
    path = "/v1/keys"
    sent = 0
    async with aiohttp.ClientSession(two_workers.url, connector=connector) as http:
        # The second worker may still be starting: send until both have answered, then 20 more.
        while sent < 20 or len(prefixes) < 2:
            assert sent < 2000, "only one worker ever answered"
            async with http.get(path) as response:
                assert response.status == 200
                prefixes.add(response.headers["X-Request-Id"].split("-")[0])
            sent += 1
            if len(prefixes) < 2:
                await asyncio.sleep(0.01)
        totals: dict[str, float] = {}
        for _ in range(200):  # bounded: each worker writes its values once a second
            async with http.get("/metrics") as response:
                assert response.status == 200
                worker = response.headers["X-Request-Id"].split("-")[0]
                samples = parse(await response.text())
            labels = {"method": "GET", "route": path, "status": "200"}
            count = value(samples, "passcode_http_requests_total", **labels)
            assert count <= sent
            if count == sent:
                totals[worker] = count
            if len(totals) == 2:
                break
            await asyncio.sleep(0.05)
    assert totals == dict.fromkeys(prefixes, float(sent))
    assert await asyncio.to_thread(two_workers.stop) == 0
    assert list((two_workers.log_path.parent / "tmp").iterdir()) == []


async def test_without_the_access_log_only_a_callers_id_comes_back(
    aiohttp_client: Any, settings: Settings
) -> None:
    """With the access log off a made id would name no log line: none is made, a sane id the
    caller sent still comes back."""
    quiet = await aiohttp_client(create_app(replace(settings, access_log=False)))
    response = await quiet.get("/healthz")
    assert "X-Request-Id" not in response.headers
    response = await quiet.get("/healthz", headers={"X-Request-Id": "gate-7.42"})
    assert response.headers["X-Request-Id"] == "gate-7.42"


async def test_a_scrape_while_redis_hangs_answers_without_the_backlog(
    aiohttp_client: Any, settings: Settings, proxies: Callable[[str], Awaitable[TcpProxy]]
) -> None:
    """Redis stops answering: the scrape still answers 200 (the backlog read has its deadline),
    with the process's series and without the backlog's, which it could not read."""
    assert settings.redis_url is not None
    proxy = await proxies(settings.redis_url)
    client = await aiohttp_client(
        create_app(replace(settings, redis_url=proxy.url(settings.redis_url), drain_enabled=False))
    )
    assert ("passcode_scan_stream_backlog", frozenset({("shard", "0")})) in await scrape(client)
    proxy.freeze()
    async with asyncio.timeout(10):
        samples = await scrape(client)
    assert not {name for name, _ in samples if name.startswith("passcode_scan_stream")}
    assert ("passcode_pg_pool_max_connections", frozenset()) in samples
    await proxy.cut()
