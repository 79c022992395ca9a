"""The terminal verify contract (DESIGN §3, with the failure rows of §5), on real servers.

Every reason code is reached through ``POST /v1/verify`` with the decision, colour and holder the
contract gives it; every non-outcome error is a problem+json body with the documented status;
batches keep their order and limits; a retried scan id is stored once; scans outlive a restart;
a dead or hung Redis/Postgres never produces a blind admit; the hot path does not touch Postgres.
Outages are made with a real TCP proxy between the service and the real servers (tests/api/proxy.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.api.schemas import VERIFY_BATCH_RESPONSE
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.passfmt import (
    PREFIX,
    b45decode,
    b45encode,
    kid_of,
    sign_pass,
)
from passcode.keys import DRAIN, POOL, SETTINGS
from passcode.testing import CLOSE_CONTACT, FEVER, HEALTHY, auth
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ADMIN,
    PROBLEM,
    Client,
    ClientFactory,
    TokenFactory,
    assert_invalid,
    assert_problem,
    citizen_pass,
    claims_for,
    claims_of,
    declare,
    fetch_pass,
    needs_tcp,
    new_terminal,
    post_verify,
    service_signed,
    stored_scans,
    terminal_clock,
    verify_ok,
)

# --- 1. every reason code -----------------------------------------------------------------------


async def test_green_pass_is_admitted_with_the_masked_holder(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """ok: a green subject's fresh pass → admit, green, masked name; the given scan_id is echoed."""
    code = await citizen_pass(client, make_token, name="张小三")
    scan_id = str(uuid.uuid4())
    body = await verify_ok(
        client, terminal_key, code, scan_id=scan_id, scanned_at=terminal_clock(hours=-1)
    )
    assert body["decision"] == "admit"
    assert body["reason"] == "ok"
    assert body["color"] == "green"
    assert body["holder"] == {"name": "张*三"}
    assert body["scan_id"] == scan_id


async def test_every_answer_names_the_kind_of_code(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """kind (DESIGN §3, 一码通用): "passcode" for our pass, also when it is not a valid one;
    null for a text of no known kind."""
    code = await citizen_pass(client, make_token)
    assert (await verify_ok(client, terminal_key, code))["kind"] == "passcode"
    assert (await verify_ok(client, terminal_key, PREFIX + "A"))["kind"] == "passcode"
    unknown = await verify_ok(client, terminal_key, "https://example.com/not-a-pass")
    assert_invalid(unknown, "unsupported")
    assert unknown["kind"] is None


async def test_fever_declaration_is_denied_yellow(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """status_yellow: a pass of a subject who declared 38.5 °C → deny, yellow, holder shown."""
    code = await citizen_pass(client, make_token, FEVER, name="李四")
    body = await verify_ok(client, terminal_key, code)
    assert body["decision"] == "deny"
    assert body["reason"] == "status_yellow"
    assert body["color"] == "yellow"
    assert body["holder"] == {"name": "李*"}


@pytest.mark.parametrize("how", ["override", "close_contact"])
async def test_red_subject_is_denied_red(
    client: Client, make_token: TokenFactory, terminal_key: str, how: str
) -> None:
    """status_red: an authority's red ruling, or a close-contact declaration → deny, red.

    For the ruling, the pass in hand was issued green: the live status decides, not the pass.
    """
    user_id = f"user-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id, name="张小三")
    if how == "override":
        await declare(client, token, HEALTHY)
        code = await fetch_pass(client, token)
        ruled = await client.post(
            "/v1/admin/overrides",
            json={"user_id": user_id, "color": "red", "reason": "positive_test"},
            headers=ADMIN,
        )
        assert ruled.status == 201, await ruled.text()
    else:
        await declare(client, token, CLOSE_CONTACT)
        code = await fetch_pass(client, token)
    body = await verify_ok(client, terminal_key, code)
    assert body["decision"] == "deny"
    assert body["reason"] == "status_red"
    assert body["color"] == "red"
    assert body["holder"] == {"name": "张*三"}


async def test_expired_pass_is_invalid(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """expired: genuinely signed by the service but past expiry by more than the clock skew."""
    now = int(time.time())
    skew = client.app[SETTINGS].clock_skew
    code = service_signed(
        client, claims_for(client, issued_at=now - skew - 120, expires_at=now - skew - 60)
    )
    assert_invalid(await verify_ok(client, terminal_key, code), "expired")


async def test_pass_expired_within_the_clock_skew_is_still_admitted(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Clock skew (§5): a green subject's pass that expired 20 s ago (skew 30 s) is admitted."""
    claims = claims_of(client, await citizen_pass(client, make_token))
    now = int(time.time())
    late = dataclasses.replace(claims, issued_at=now - 80, expires_at=now - 20)
    body = await verify_ok(client, terminal_key, service_signed(client, late))
    assert (body["decision"], body["reason"]) == ("admit", "ok")


async def test_pass_from_the_future_is_not_yet_valid(client: Client, terminal_key: str) -> None:
    """not_yet_valid: signed by the service, issued further in the future than the skew."""
    now = int(time.time())
    skew = client.app[SETTINGS].clock_skew
    code = service_signed(
        client, claims_for(client, issued_at=now + skew + 60, expires_at=now + skew + 120)
    )
    assert_invalid(await verify_ok(client, terminal_key, code), "not_yet_valid")


async def test_tampered_signature_is_bad_signature(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """bad_signature: one byte of a real pass's signature changed, re-encoded as Base45."""
    code = await citizen_pass(client, make_token)
    raw = bytearray(b45decode(code.removeprefix(PREFIX)))
    raw[-1] ^= 0x01  # the signature is the last 64 bytes of the COSE_Sign1
    body = await verify_ok(client, terminal_key, PREFIX + b45encode(bytes(raw)))
    assert_invalid(body, "bad_signature")


async def test_pass_signed_by_a_foreign_key_is_unknown_key(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """unknown_key: well-formed claims for a real subject, signed by a key the service never had."""
    claims = claims_of(client, await citizen_pass(client, make_token))
    forger = Ed25519PrivateKey.generate()
    code = sign_pass(claims, forger, kid_of(forger.public_key()))
    assert_invalid(await verify_ok(client, terminal_key, code), "unknown_key")


@pytest.mark.parametrize(
    "code",
    [
        PREFIX + "this is not base45!",
        PREFIX + "GARBAGE GARBAGE",
        PREFIX + b45encode(b"not a COSE message"),
        PREFIX + b45encode(bytes.fromhex("d28443a10127a0")),  # truncated COSE_Sign1
        PREFIX,
    ],
)
async def test_garbage_after_the_prefix_is_malformed(
    client: Client, terminal_key: str, code: str
) -> None:
    """malformed: PC1: followed by anything that is not a canonical COSE_Sign1 pass."""
    assert_invalid(await verify_ok(client, terminal_key, code), "malformed")


async def test_pass_issued_before_a_status_change_is_superseded(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """superseded: green → yellow → green again; the first green pass is older than the status.

    While yellow it is denied yellow; once green again it is denied as superseded (the colour
    printed in it matches, but it predates the latest change), while a fresh pass is admitted.
    """
    token = make_token(name="王五")
    await declare(client, token, HEALTHY)
    old = await fetch_pass(client, token)
    assert (await verify_ok(client, terminal_key, old))["decision"] == "admit"

    await declare(client, token, FEVER)
    body = await verify_ok(client, terminal_key, old)
    assert (body["decision"], body["reason"], body["color"]) == ("deny", "status_yellow", "yellow")

    await declare(client, token, HEALTHY)
    body = await verify_ok(client, terminal_key, old)
    assert body["decision"] == "deny"
    assert body["reason"] == "superseded"
    assert body["color"] == "green"  # the live colour
    assert body["holder"] == {"name": "王*"}

    fresh = await fetch_pass(client, token)
    assert claims_of(client, fresh).version > claims_of(client, old).version
    assert (await verify_ok(client, terminal_key, fresh))["decision"] == "admit"


async def test_pass_with_a_version_below_the_live_one_is_superseded(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """superseded: a genuine, unexpired pass carrying a status version lower than the live one."""
    claims = claims_of(client, await citizen_pass(client, make_token))
    assert claims.version >= 1
    older = dataclasses.replace(claims, version=claims.version - 1, token_id=os.urandom(8))
    body = await verify_ok(client, terminal_key, service_signed(client, older))
    assert (body["decision"], body["reason"]) == ("deny", "superseded")


@pytest.mark.parametrize(
    "code",
    [
        "https://example.com/health-code?id=12345",
        "pc1:lowercase-prefix",
        "hello",
    ],
)
async def test_code_of_another_kind_is_unsupported(
    client: Client, terminal_key: str, code: str
) -> None:
    """unsupported: a code of no kind this service reads (a URL, plain text)."""
    assert_invalid(await verify_ok(client, terminal_key, code), "unsupported")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH-R6IOOK.IR9B+9D-F5$PD", "eu-dcc"),
        ("shc:/5676290952432060346029243740446031222959532654603460292540772804336028702", "shc"),
    ],
)
async def test_a_broken_foreign_certificate_is_invalid_and_named_by_its_kind(
    client: Client, terminal_key: str, code: str, kind: str
) -> None:
    """A truncated EU DCC or SMART Health Card is read (一码通用), not `unsupported`: invalid with
    the reason its reader gives, and the answer names its kind."""
    body = await verify_ok(client, terminal_key, code)
    assert body["decision"] == "invalid"
    assert body["reason"] not in {"unsupported", "ok"}
    assert body["kind"] == kind
    assert body["holder"] is None


# --- 2. errors that are not verification outcomes ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        json.dumps({"code": "PC1:X", "color": "green"}).encode(),  # unknown field
        json.dumps({"code": "PC1:X", "scan_id": "not-a-uuid"}).encode(),
        json.dumps({"code": "PC1:X", "scanned_at": "yesterday"}).encode(),
        json.dumps({"scan_id": str(uuid.uuid4())}).encode(),  # no code
        json.dumps({"code": 42}).encode(),
    ],
)
async def test_malformed_request_is_400_problem(
    client: Client, terminal_key: str, raw: bytes
) -> None:
    """400: bad JSON, a wrong shape, an unknown field, a bad scan_id/scanned_at, no code."""
    response = await client.post(
        "/v1/verify",
        data=raw,
        headers={**auth(terminal_key), "Content-Type": "application/json"},
    )
    assert_problem(response, await response.json(content_type=None), 400)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer pt_" + "x" * 43},
        {"Authorization": "Bearer not-a-terminal-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_missing_or_unknown_credential_is_401_problem(
    client: Client, headers: dict[str, str]
) -> None:
    """401: no Authorization, an unknown terminal key, or another scheme."""
    response = await client.post("/v1/verify", json={"code": "PC1:X"}, headers=headers)
    assert_problem(response, await response.json(content_type=None), 401)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


async def test_revoked_terminal_is_403_problem(client: Client) -> None:
    """403: a terminal that worked is refused, at once, after its revocation."""
    terminal_id, key = await new_terminal(client)
    response, _ = await post_verify(client, key, code="hello")
    assert response.status == 200
    revoked = await client.post(f"/v1/admin/terminals/{terminal_id}/revoke", headers=ADMIN)
    assert revoked.status == 204, await revoked.text()
    response, body = await post_verify(client, key, code="hello")
    assert_problem(response, body, 403)


async def test_body_over_max_body_is_413_problem(client: Client, terminal_key: str) -> None:
    """413: a verify body larger than settings.max_verify_body."""
    limit = client.app[SETTINGS].max_verify_body
    response, body = await post_verify(client, terminal_key, code="PC1:" + "A" * limit)
    assert_problem(response, body, 413)


async def test_non_json_body_is_415_problem(client: Client, terminal_key: str) -> None:
    """415: a body sent as text/plain, even if its text is JSON."""
    response = await client.post(
        "/v1/verify",
        data=json.dumps({"code": "hello"}),
        headers={**auth(terminal_key), "Content-Type": "text/plain"},
    )
    assert_problem(response, await response.json(content_type=None), 415)


async def test_terminal_over_its_rate_is_429_with_retry_after(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """429 + Retry-After: rate 1/s with a burst of 2, the third request in a row is refused."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, terminal_rate=1.0, terminal_burst=2.0))
    )
    _, key = await new_terminal(client)
    statuses = []
    for _ in range(3):
        response, body = await post_verify(client, key, code="hello")
        statuses.append(response.status)
    assert statuses == [200, 200, 429]
    assert_problem(response, body, 429)
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("mode", ["cut", "freeze"])
async def test_both_stores_down_is_503_unverified_never_admit(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
    mode: str,
) -> None:
    """503 unverified: Redis and Postgres both dead (cut) or hung (freeze) → never an admit.

    The service reaches both through TCP proxies; after a good verify they are broken. The
    verify must come back within a bound (its deadlines, not a client timeout, end it) with
    decision "unverified", reason "status_unavailable" and Retry-After; so must a batch.
    """
    needs_tcp(settings.redis_url, settings.database_url)
    assert settings.redis_url is not None
    assert settings.database_url is not None
    redis_proxy = await proxies(settings.redis_url)
    pg_proxy = await proxies(settings.database_url)
    proxied = dataclasses.replace(
        settings,
        redis_url=redis_proxy.url(settings.redis_url),
        database_url=pg_proxy.url(settings.database_url),
        drain_enabled=False,
        pg_timeout=1.0,
        terminal_cache_ttl=60.0,
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        code = await citizen_pass(client, make_token)
        assert (await verify_ok(client, key, code))["decision"] == "admit"

        for proxy in (redis_proxy, pg_proxy):
            if mode == "cut":
                await proxy.cut()
            else:
                proxy.freeze()

        async with asyncio.timeout(10):
            response, body = await post_verify(client, key, code=code)
        assert response.status == 503, body
        assert response.content_type == PROBLEM
        assert body["decision"] == "unverified"
        assert body["reason"] == "status_unavailable"
        assert body["status"] == 503
        assert int(response.headers["Retry-After"]) >= 1

        if mode == "cut":  # a hung store costs a deadline per request: check the batch once
            async with asyncio.timeout(10):
                batch = await client.post(
                    "/v1/verify/batch", json={"scans": [{"code": code}]}, headers=auth(key)
                )
            batch_body = await batch.json(content_type=None)
            assert batch.status == 503, batch_body
            assert batch_body["decision"] == "unverified"
    finally:
        for proxy in (redis_proxy, pg_proxy):
            await proxy.cut()  # a dead server fails fast: shutdown does not wait on a hung one
        await client.close()


@pytest.mark.parametrize("mode", ["cut", "freeze"])
async def test_redis_down_verify_answers_from_postgres_and_stores_the_scan_there(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
    mode: str,
) -> None:
    """Redis dead or hung, Postgres up (§5): verify still admits, from the Postgres status,
    and the scan is written to Postgres directly (the drain is off, so not via the stream)."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    assert settings.database_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), drain_enabled=False
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        yellow = await citizen_pass(client, make_token, FEVER, name="李四")
        green = await citizen_pass(client, make_token, name="张小三")
        if mode == "cut":
            await redis_proxy.cut()
        else:
            redis_proxy.freeze()

        scan_id = str(uuid.uuid4())
        async with asyncio.timeout(10):
            body = await verify_ok(client, key, green, scan_id=scan_id)
        assert (body["decision"], body["reason"], body["color"]) == ("admit", "ok", "green")
        assert body["holder"] == {"name": "张*三"}

        denied_id = str(uuid.uuid4())
        async with asyncio.timeout(10):
            denied = await verify_ok(client, key, yellow, scan_id=denied_id)
        assert (denied["decision"], denied["reason"]) == ("deny", "status_yellow")

        rows = {
            str(r["scan_id"]): r
            for r in await stored_scans(settings.database_url, [scan_id, denied_id])
        }
        assert rows.keys() == {scan_id, denied_id}
        assert (rows[scan_id]["decision"], rows[scan_id]["reason"]) == ("admit", "ok")
        assert (rows[denied_id]["decision"], rows[denied_id]["color"]) == ("deny", "yellow")
    finally:
        await redis_proxy.cut()
        await client.close()


async def test_postgres_down_verify_still_admits_from_redis(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """Postgres dead, Redis up (§5): verify keeps working from the Redis status copy."""
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
        code = await citizen_pass(client, make_token)
        assert (await verify_ok(client, key, code))["decision"] == "admit"
        await pg_proxy.cut()
        async with asyncio.timeout(10):
            body = await verify_ok(client, key, code)
        assert (body["decision"], body["reason"], body["holder"]) == (
            "admit",
            "ok",
            {"name": "张*三"},
        )
    finally:
        await pg_proxy.cut()
        await client.close()


# --- 3. batch -----------------------------------------------------------------------------------


async def test_batch_answers_in_request_order(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Batch: a mixed list (valid green, malformed, yellow) gets its results in the same order."""
    green = await citizen_pass(client, make_token)
    yellow = await citizen_pass(client, make_token, FEVER)
    scan_ids = [str(uuid.uuid4()) for _ in range(3)]
    scans = [
        {"code": green, "scan_id": scan_ids[0], "scanned_at": terminal_clock(days=-3)},
        {"code": PREFIX + "GARBAGE", "scan_id": scan_ids[1]},
        {"code": yellow, "scan_id": scan_ids[2]},
    ]
    response = await client.post(
        "/v1/verify/batch", json={"scans": scans}, headers=auth(terminal_key)
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    jsonschema.validate(body, VERIFY_BATCH_RESPONSE)
    results = body["results"]
    assert [r["scan_id"] for r in results] == scan_ids
    assert [(r["decision"], r["reason"], r["color"]) for r in results] == [
        ("admit", "ok", "green"),
        ("invalid", "malformed", None),
        ("deny", "status_yellow", "yellow"),
    ]


async def test_batch_of_more_than_500_is_400(client: Client, terminal_key: str) -> None:
    """Batch: 501 scans is a malformed request (at most 500), answered before any is verified."""
    scans = [{"code": "hello"} for _ in range(501)]
    response = await client.post(
        "/v1/verify/batch", json={"scans": scans}, headers=auth(terminal_key)
    )
    assert_problem(response, await response.json(content_type=None), 400)


async def test_batch_body_over_max_batch_body_is_413(client: Client, terminal_key: str) -> None:
    """Batch: a body larger than settings.max_batch_body is 413 (size is checked before shape)."""
    limit = client.app[SETTINGS].max_batch_body
    code = "PC1:" + "A" * 1000
    scans = [{"code": code} for _ in range(limit // len(code) + 10)]
    raw = json.dumps({"scans": scans}).encode()
    assert len(raw) > limit
    response = await client.post(
        "/v1/verify/batch",
        data=raw,
        headers={**auth(terminal_key), "Content-Type": "application/json"},
    )
    assert_problem(response, await response.json(content_type=None), 413)


# --- 4. retries are recorded once -----------------------------------------------------------------


async def test_same_scan_id_twice_is_recorded_once(
    client: Client, make_token: TokenFactory, terminal_key: str
) -> None:
    """Retry safety: a scan_id sent twice gets the same answer and is one row in scans.

    Holds for a valid pass (scan appended in the verify script) and an invalid code (appended
    with its decision), once the stream has been drained into Postgres.
    """
    code = await citizen_pass(client, make_token)
    valid_id, invalid_id = str(uuid.uuid4()), str(uuid.uuid4())
    for _ in range(2):
        body = await verify_ok(client, terminal_key, code, scan_id=valid_id)
        assert (body["decision"], body["scan_id"]) == ("admit", valid_id)
        body = await verify_ok(client, terminal_key, "PC1:GARBAGE", scan_id=invalid_id)
        assert (body["decision"], body["scan_id"]) == ("invalid", invalid_id)

    await client.app[DRAIN].drain_all()
    async with client.app[POOL].acquire() as conn:
        counts = await conn.fetch(
            "SELECT scan_id, count(*) AS n FROM scans WHERE scan_id = ANY($1::uuid[])"
            " GROUP BY scan_id",
            [uuid.UUID(valid_id), uuid.UUID(invalid_id)],
        )
    assert {str(r["scan_id"]): r["n"] for r in counts} == {valid_id: 1, invalid_id: 1}


async def test_same_scan_id_twice_is_recorded_once_while_redis_is_down(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """Retry safety in the Redis-down mode of §5: a retried scan_id is still one row."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    assert settings.database_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), drain_enabled=False
    )
    client = await aiohttp_client(create_app(proxied))
    try:
        _, key = await new_terminal(client)
        code = await citizen_pass(client, make_token)
        await redis_proxy.cut()
        scan_id = str(uuid.uuid4())
        for _ in range(2):
            assert (await verify_ok(client, key, code, scan_id=scan_id))["decision"] == "admit"
        assert len(await stored_scans(settings.database_url, [scan_id])) == 1
    finally:
        await redis_proxy.cut()
        await client.close()


# --- 5. scans survive a restart -------------------------------------------------------------------


async def test_scans_answered_before_a_restart_reach_postgres_after_it(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Durability: 50 scans answered by an app whose drain is off (so its shutdown flushes
    nothing) are not in Postgres when it stops, and all reach Postgres once a second app on the
    same Redis prefix and database starts draining."""
    assert settings.database_url is not None
    first = await aiohttp_client(create_app(dataclasses.replace(settings, drain_enabled=False)))
    _, key = await new_terminal(first)
    code = await citizen_pass(first, make_token)
    scan_ids = [str(uuid.uuid4()) for _ in range(50)]
    for index, scan_id in enumerate(scan_ids):
        # valid passes land on the subject's shard, invalid codes on the scan id's: both paths
        scanned = code if index % 2 == 0 else "PC1:GARBAGE"
        await verify_ok(first, key, scanned, scan_id=scan_id)
    await first.close()
    assert await stored_scans(settings.database_url, scan_ids) == []

    await aiohttp_client(create_app(dataclasses.replace(settings, drain_enabled=True)))
    rows: list[asyncpg.Record] = []
    async with asyncio.timeout(15):
        while len(rows) < len(scan_ids):
            await asyncio.sleep(0.05)
            rows = await stored_scans(settings.database_url, scan_ids)
    assert sorted(str(r["scan_id"]) for r in rows) == sorted(scan_ids)
    decisions = {str(r["scan_id"]): r["decision"] for r in rows}
    assert [decisions[s] for s in scan_ids] == ["admit", "invalid"] * 25


# --- 6. the hot path does not query Postgres --------------------------------------------------------

_ACTIVITY = (
    "SELECT pid, backend_start, xact_start, query_start, state_change FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND pid <> pg_backend_pid() ORDER BY pid"
)


async def test_cached_verify_sends_no_query_to_postgres(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """Hot path: 30 verifies of a cached green pass leave every Postgres backend of the service
    untouched (pg_stat_activity's query_start/state_change, which the server updates live for
    each statement, do not move and no connection is opened), while a citizen request does."""
    assert settings.database_url is not None
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, drain_enabled=False, terminal_cache_ttl=60.0))
    )
    _, key = await new_terminal(client)
    token = make_token()
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    assert (await verify_ok(client, key, code))["decision"] == "admit"  # warms the terminal cache

    observer = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        before = await observer.fetch(_ACTIVITY)
        assert before, "the service holds no Postgres connection to observe"
        assert all(row["query_start"] is not None for row in before)
        for _ in range(30):
            assert (await verify_ok(client, key, code))["decision"] == "admit"
        after = await observer.fetch(_ACTIVITY)
        assert [tuple(r) for r in after] == [tuple(r) for r in before]

        # Positive control: a declaration does query Postgres, and the check sees it.
        declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
        assert declared.status == 201
        control = await observer.fetch(_ACTIVITY)
        assert [tuple(r) for r in control] != [tuple(r) for r in before]
    finally:
        await observer.close()
