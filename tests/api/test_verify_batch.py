"""``POST /v1/verify/batch`` (DESIGN §3) at batch speed, on real servers: the scans of a batch go
to Redis together (one write per node), the answers keep the batch's order, and each scan keeps
the semantics of a single verify: a repeated scan id is decided and stored once, the first; the
terminal's rate limit is charged one unit per scan; Redis down sends each scan to PostgreSQL;
a scan that cannot be decided makes the batch the 503 ``unverified`` of a single verify, and the
others are recorded, so a retry stores none twice.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import jsonschema
import pytest

from passcode.api.schemas import VERIFY_BATCH_RESPONSE
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.passfmt import PREFIX
from passcode.keys import CACHE, DRAIN, POOL
from passcode.store.pg import acquire
from passcode.store.transport import Transport
from passcode.testing import FEVER, auth
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ON_CLUSTER,
    PROBLEM,
    Client,
    ClientFactory,
    TokenFactory,
    assert_problem,
    citizen_pass,
    claims_of,
    needs_tcp,
    new_terminal,
    terminal_clock,
    verify_ok,
)

BATCH = "/v1/verify/batch"


async def post_batch(client: Client, key: str, scans: list[dict[str, Any]]) -> list[Any]:
    """The results of a batch that must be answered 200, checked against the response schema."""
    response = await client.post(BATCH, json={"scans": scans}, headers=auth(key))
    assert response.status == 200, await response.text()
    body = await response.json()
    jsonschema.validate(body, VERIFY_BATCH_RESPONSE)
    return body["results"]  # type: ignore[no-any-return]


async def stored(client: Client, scan_ids: list[str]) -> dict[str, list[Any]]:
    """Each scan id's rows in ``scans`` (decision, terminal time), read over the app's pool."""
    async with acquire(client.app[POOL], "read", 5) as conn:
        rows = await conn.fetch(
            "SELECT scan_id, decision, terminal_time FROM scans WHERE scan_id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in scan_ids],
        )
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(str(row["scan_id"]), []).append((row["decision"], row["terminal_time"]))
    return found


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_batch_goes_to_redis_in_one_write_and_is_answered_in_its_order(
    client: Client, make_token: TokenFactory, terminal_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty scans of four citizens (green and yellow): all forty verify scripts leave in one
    coalesced write (one per node on a cluster), not one round trip each, and every result is
    in its scan's place."""
    green = await citizen_pass(client, make_token)
    yellow = await citizen_pass(client, make_token, FEVER)
    codes = [green, yellow, await citizen_pass(client, make_token), PREFIX + "GARBAGE"]
    scans = [{"code": codes[i % 4], "scan_id": str(uuid.uuid4())} for i in range(40)]
    cache = client.app[CACHE]
    sent: list[list[tuple[object, ...]]] = []
    # private: every node's send is observed (not replaced) to count the writes on the wire
    original = Transport._send

    async def observed(
        self: Transport, batch: list[tuple[tuple[object, ...], Any]], timeout: Any = None
    ) -> None:
        if timeout is None:  # the coalesced batch (a pipeline of its own has a deadline given)
            sent.append([command for command, _ in batch])
        await original(self, batch, timeout)

    # the scripts loaded on every node first (a node's NOSCRIPT retry is a write of its own)
    await post_batch(client, terminal_key, [{"code": code} for code in codes])
    monkeypatch.setattr(Transport, "_send", observed)
    results = await post_batch(client, terminal_key, scans)
    monkeypatch.undo()

    assert [r["scan_id"] for r in results] == [s["scan_id"] for s in scans]
    expected = [
        ("admit", "ok"),
        ("deny", "status_yellow"),
        ("admit", "ok"),
        ("invalid", "malformed"),
    ]
    assert [(r["decision"], r["reason"]) for r in results] == expected * 10
    # private: the verify script's SHA names its calls on the wire
    verify_sha = cache._verify.sha
    writes = [sum(1 for c in batch if c[:2] == ("EVALSHA", verify_sha)) for batch in sent]
    writes = [n for n in writes if n]
    assert sum(writes) == 30  # the garbage codes need no status: appended by another script
    assert len(writes) <= (3 if ON_CLUSTER else 1), writes


async def test_a_mixed_batch_is_answered_item_by_item_and_every_scan_is_stored(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Valid, invalid, unsupported and server-numbered scans interleaved in a batch of 100:
    each gets its own decision in its place, and after the drain each is one row."""
    green = await citizen_pass(client, make_token)
    yellow = await citizen_pass(client, make_token, FEVER)
    kinds = [
        (green, ("admit", "ok")),
        ("hello", ("invalid", "unsupported")),
        (yellow, ("deny", "status_yellow")),
        (PREFIX + "GARBAGE", ("invalid", "malformed")),
        (green[:-1] + ("A" if green[-1] != "A" else "B"), None),  # one character off
    ]
    scans: list[dict[str, Any]] = []
    for i in range(100):
        item: dict[str, Any] = {"code": kinds[i % 5][0], "scanned_at": terminal_clock(hours=-i)}
        if i % 2:
            item["scan_id"] = str(uuid.uuid4())
        scans.append(item)
    results = await post_batch(client, terminal_key, scans)
    for i, (item, result) in enumerate(zip(scans, results, strict=True)):
        expected = kinds[i % 5][1]
        if expected is None:
            assert result["decision"] == "invalid", result
        else:
            assert (result["decision"], result["reason"]) == expected, (i, result)
        if "scan_id" in item:
            assert result["scan_id"] == item["scan_id"]
    assert len({r["scan_id"] for r in results}) == 100

    await client.app[DRAIN].drain_all()
    rows = await stored(client, [r["scan_id"] for r in results])
    assert {sid: len(found) for sid, found in rows.items()} == {r["scan_id"]: 1 for r in results}
    for item, result in zip(scans, results, strict=True):
        decision, terminal_time = rows[result["scan_id"]][0]
        assert (decision, terminal_time) == (result["decision"], instant(item["scanned_at"]))


async def test_a_scan_id_repeated_in_a_batch_is_answered_twice_and_stored_once_the_first(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """A terminal's offline queue may hold a retried scan twice: both places are answered with
    the same scan id and decision, and the scan log keeps one row, the first occurrence's."""
    code = await citizen_pass(client, make_token)
    other = await citizen_pass(client, make_token, FEVER)
    repeated, single = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = terminal_clock(hours=-2), terminal_clock(hours=-1)
    scans = [
        {"code": code, "scan_id": repeated, "scanned_at": first},
        {"code": other, "scan_id": single},
        {"code": code, "scan_id": repeated, "scanned_at": second},
    ]
    results = await post_batch(client, terminal_key, scans)
    assert [(r["scan_id"], r["decision"]) for r in results] == [
        (repeated, "admit"),
        (single, "deny"),
        (repeated, "admit"),
    ]
    await client.app[DRAIN].drain_all()
    assert await stored(client, [repeated, single]) == {
        repeated: [("admit", instant(first))],
        single: [("deny", None)],
    }


async def test_a_batch_is_charged_one_unit_per_scan(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A burst of five: a batch of six is 429 before any scan is verified (nothing stored), a
    batch of five passes and spends the burst, so the next single verify and the next batch of
    one are 429 too."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, terminal_rate=0.01, terminal_burst=5))
    )
    _, key = await new_terminal(client)
    code = await citizen_pass(client, make_token)
    six = [{"code": code, "scan_id": str(uuid.uuid4())} for _ in range(6)]

    refused = await client.post(BATCH, json={"scans": six}, headers=auth(key))
    assert_problem(refused, await refused.json(content_type=None), 429)
    assert int(refused.headers["Retry-After"]) >= 1

    results = await post_batch(client, key, six[:5])
    assert [r["decision"] for r in results] == ["admit"] * 5

    single = await client.post("/v1/verify", json={"code": code}, headers=auth(key))
    assert_problem(single, await single.json(content_type=None), 429)
    again = await client.post(BATCH, json={"scans": six[5:]}, headers=auth(key))
    assert_problem(again, await again.json(content_type=None), 429)

    await client.app[DRAIN].drain_all()
    assert set(await stored(client, [s["scan_id"] for s in six])) == {s["scan_id"] for s in six[:5]}


async def test_redis_down_a_batch_is_decided_from_postgres_and_stored_there_once_each(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """Redis cut (§5): every scan of the batch takes the fallback of a single verify, decided
    from PostgreSQL and written there directly (the drain is off), a repeated scan id once,
    with its first occurrence's terminal time."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), drain_enabled=False
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        green = await citizen_pass(client, make_token)
        yellow = await citizen_pass(client, make_token, FEVER)
        await redis_proxy.cut()

        repeated = str(uuid.uuid4())
        first, second = terminal_clock(hours=-3), terminal_clock(hours=-2)
        scans = [
            {"code": green, "scan_id": repeated, "scanned_at": first},
            *({"code": yellow, "scan_id": str(uuid.uuid4())} for _ in range(20)),
            {"code": "PC1:GARBAGE", "scan_id": str(uuid.uuid4())},
            {"code": green, "scan_id": repeated, "scanned_at": second},
        ]
        results = await post_batch(client, key, scans)
        assert [r["decision"] for r in results] == ["admit", *["deny"] * 20, "invalid", "admit"]
        assert [r["scan_id"] for r in results] == [s["scan_id"] for s in scans]

        rows = await stored(client, [s["scan_id"] for s in scans])
        assert rows[repeated] == [("admit", instant(first))]
        assert {sid: len(found) for sid, found in rows.items()} == {s["scan_id"]: 1 for s in scans}
    finally:
        await redis_proxy.cut()
        await client.close()


async def test_a_scan_that_cannot_be_decided_makes_the_batch_unverified_and_the_rest_are_kept(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """PostgreSQL cut, Redis up: the batch's cached scans are decided, but one whose status is
    not in Redis cannot be, so the answer is the 503 ``unverified`` of a single verify (never
    a blind admit). The decided ones were recorded: once PostgreSQL is back they drain, and the
    terminal's retry of the whole batch is answered and stores no scan twice."""
    needs_tcp(settings.database_url)
    assert settings.database_url is not None
    pg_proxy = await proxies(settings.database_url)
    proxied = dataclasses.replace(
        settings,
        database_url=pg_proxy.url(settings.database_url),
        drain_enabled=False,
        terminal_cache_ttl=60.0,
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        cached = await citizen_pass(client, make_token)
        missing = await citizen_pass(client, make_token)
        assert (await verify_ok(client, key, cached))["decision"] == "admit"
        cache = client.app[CACHE]
        status_key = cache.status_key(claims_of(client, missing).subject)
        await cache.transport.execute([(("DEL", status_key), status_key)], timeout=5)
        await pg_proxy.cut()

        ids = [str(uuid.uuid4()) for _ in range(3)]
        scans = [
            {"code": code, "scan_id": sid}
            for code, sid in zip((cached, missing, cached), ids, strict=True)
        ]
        response = await client.post(BATCH, json={"scans": scans}, headers=auth(key))
        body = await response.json(content_type=None)
        assert response.status == 503, body
        assert response.content_type == PROBLEM
        assert (body["decision"], body["reason"]) == ("unverified", "status_unavailable")

        await pg_proxy.restore()
        await client.app[DRAIN].ensure_groups()  # the drain is off: no groups made at start
        await client.app[DRAIN].drain_all()
        assert set(await stored(client, ids)) == {ids[0], ids[2]}

        results = await post_batch(client, key, scans)
        assert [r["decision"] for r in results] == ["admit"] * 3
        await client.app[DRAIN].drain_all()
        rows = await stored(client, ids)
        assert {sid: len(found) for sid, found in rows.items()} == dict.fromkeys(ids, 1)
    finally:
        await pg_proxy.cut()
        await client.close()
