"""The service's logs never carry pass text, full names, credentials or raw user ids.

A real ``passcode serve`` runs with ``PASSCODE_LOG_LEVEL=DEBUG`` and the access log on (so every
logger the CLI configures, at its most verbose, ends up in its stderr), a full flow is driven
through it, errors included, and the captured output is searched for every secret the flow used;
once with text lines, once with ``PASSCODE_LOG_FORMAT=json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from passcode.testing import HEALTHY
from tests.dcc_maker import claims, make_signer, sign, vaccination
from tests.helpers import dev_token
from tests.live_server import LiveServer, live_settings

RED = {**HEALTHY, "temperature_c": 39.2, "symptoms": ["fever", "cough"]}


@pytest.fixture(params=["text", "json"])
async def live(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[LiveServer]:
    settings = live_settings(
        database_url, redis_url, redis_prefix, tmp_path, tag="logs", drain_interval=0.05,
        pg_pool_max=4,
    )  # fmt: skip
    server = LiveServer(
        settings,
        tmp_path / "server.log",
        extra_env={
            "PASSCODE_LOG_LEVEL": "DEBUG",
            "PASSCODE_ACCESS_LOG": "1",
            "PASSCODE_LOG_FORMAT": request.param,
        },
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def _check_json_lines(log: str) -> list[str]:
    """Every line one JSON object; the access lines with a request id, the route template, the
    status and the duration, of the kinds the flow sent. Returns every field value decoded."""
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all(
        isinstance(r, dict) and {"time", "level", "logger", "message"} <= set(r) for r in records
    )
    access = [r for r in records if r["logger"] == "aiohttp.access"]
    assert access
    for record in access:
        assert isinstance(record["request_id"], str)
        assert record["request_id"]
        assert isinstance(record["status"], int)
        assert isinstance(record["duration"], float)
    seen = {(r["method"], r["route"], r["status"]) for r in access}
    assert {
        ("POST", "/v1/verify", 200),
        ("GET", "/v1/pass", 401),
        ("GET", "(unrouted)", 404),
    } <= seen
    assert len({r["request_id"] for r in access}) == len(access)
    return [str(v) for r in records for v in r.values()]


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.mark.slow
async def test_logs_of_a_full_flow_hold_no_pass_name_credential_or_user_id(
    live: LiveServer,
) -> None:
    """Drives declare (CJK and Latin full names), pass JSON/PNG/SVG, terminal add, verify and
    batch verify, an override naming the raw user id, verify after it, terminal revoke, and error
    paths that carry secrets in the request (a tampered pass, unknown and revoked terminal keys,
    an expired token, a citizen token on the admin API, a wrong admin key, bad JSON around a pass,
    an oversized body, credentials and a pass in a query string or in an unrouted path). Then the server is stopped and
    its whole DEBUG log is searched: no ``PC1:`` text issued, no full name (nor any part of the
    Latin one), no terminal key, admin key, ID token (or its signature), server secret, nor raw
    user id. Controls: the server ran with ``log_level='DEBUG'`` (its start-up line says so) and
    the log holds an access-log line per request kind, so the search ran over real output."""
    settings = live.settings
    assert settings.admin_key is not None
    assert settings.secret is not None
    base = live.url
    admin = _bearer(settings.admin_key)
    alice_id, bob_id = f"raw-user-alice-{uuid.uuid4().hex}", f"raw-user-bob-{uuid.uuid4().hex}"
    alice_name, bob_name = "欧阳娜娜", "Johnathan Quincy Smithers"
    alice = dev_token(settings, alice_id, alice_name)
    bob = dev_token(settings, bob_id, bob_name)
    expired = dev_token(settings, alice_id, alice_name, ttl=-3600)
    codes: list[str] = []
    keys: list[str] = []

    async with aiohttp.ClientSession(base) as http:

        async def call(method: str, path: str, expect: int, **kwargs: Any) -> Any:
            async with http.request(method, path, **kwargs) as response:
                body = await response.read()
                assert response.status == expect, (method, path, response.status, body[:300])
                if response.content_type.endswith("json"):
                    return await response.json(content_type=None)
                return body

        await call("POST", "/v1/declarations", 201, json=HEALTHY, headers=_bearer(alice))
        await call(
            "POST",
            "/v1/declarations",
            201,
            json=RED,
            headers={**_bearer(bob), "Idempotency-Key": "bob-1"},
        )
        for token in (alice, bob):
            codes.append((await call("GET", "/v1/pass", 200, headers=_bearer(token)))["code"])
            await call("GET", "/v1/pass.png", 200, headers=_bearer(token))
            await call("GET", "/v1/pass.svg", 200, headers=_bearer(token))

        made = await call("POST", "/v1/admin/terminals", 201, json={"place": "Gate"}, headers=admin)
        keys.append(made["key"])
        terminal = _bearer(made["key"])
        # A request id shaped like a credential is not taken (nor logged, nor echoed).
        as_id = {**terminal, "X-Request-Id": made["key"]}
        first = await call("POST", "/v1/verify", 200, json={"code": codes[0]}, headers=as_id)
        assert first["decision"] == "admit"
        await call(
            "POST",
            "/v1/verify/batch",
            200,
            json={"scans": [{"code": c, "scan_id": str(uuid.uuid4())} for c in codes]},
            headers=terminal,
        )
        override = {"user_id": alice_id, "color": "red", "reason": "positive_test"}
        await call("POST", "/v1/admin/overrides", 201, json=override, headers=admin)
        after = await call("POST", "/v1/verify", 200, json={"code": codes[0]}, headers=terminal)
        assert after["decision"] == "deny"

        # A foreign certificate (issue 14): trusted, then read, admitted or not; its holder's
        # name, birth date, certificate id and text must not reach the log either.
        now = int(time.time())
        signer = make_signer(not_before=now - 86_400, not_after=now + 86_400 * 30)
        trusted = {"certificates": [base64.b64encode(signer.der).decode()]}
        await call("POST", "/v1/admin/trust/dcc", 200, json=trusted, headers=admin)
        dcc_payload = vaccination(given="Wilhelmina", family="Featherstonehaugh")
        certificate_id = dcc_payload["v"][0]["ci"]
        dcc_text = sign(signer, claims(dcc_payload, iat=now - 60, exp=now + 86_400))
        foreign = await call("POST", "/v1/verify", 200, json={"code": dcc_text}, headers=terminal)
        assert foreign["kind"] == "eu-dcc"
        broken = dcc_text[:-8] + "00000000"
        await call("POST", "/v1/verify", 200, json={"code": broken}, headers=terminal)

        # Error paths that carry secrets in the request.
        tampered = codes[0][:-6] + ("AAAAAA" if not codes[0].endswith("AAAAAA") else "BBBBBB")
        bad = await call("POST", "/v1/verify", 200, json={"code": tampered}, headers=terminal)
        assert bad["decision"] == "invalid"
        await call("POST", "/v1/verify", 400, data=b'{"code": "' + codes[1].encode() + b'"', headers={**terminal, "Content-Type": "application/json"})  # fmt: skip
        await call("POST", "/v1/verify", 400, json={"code": codes[1], "holder": bob_name}, headers=terminal)  # fmt: skip
        await call("POST", "/v1/verify", 413, json={"code": codes[1], "pad": "x" * 8000}, headers=terminal)  # fmt: skip
        await call("POST", "/v1/verify", 415, data=codes[1], headers=terminal)
        unknown_key = "pt_" + uuid.uuid4().hex + uuid.uuid4().hex
        await call("POST", "/v1/verify", 401, json={"code": codes[1]}, headers=_bearer(unknown_key))
        await call("GET", "/v1/pass", 401, headers=_bearer(expired))
        await call("POST", "/v1/admin/overrides", 403, json=override, headers=_bearer(alice))
        wrong_admin = settings.admin_key + "-wrong"
        await call("POST", "/v1/admin/overrides", 401, json=override, headers=_bearer(wrong_admin))
        await call(
            "POST",
            "/v1/admin/overrides",
            400,
            json={**override, "color": alice_name},
            headers=admin,
        )
        await call("GET", "/v1/pass", 401, params={"access_token": bob, "code": codes[1]})
        await call("GET", "/v1/verify", 405, params={"code": codes[0], "key": made["key"]})
        await call("GET", "/v1/pass/" + quote(codes[1], safe=""), 404)
        await call("GET", "/" + quote(bob, safe=""), 404)
        await call("POST", f"/v1/admin/terminals/{made['id']}/revoke", 204, headers=admin)
        await call("POST", "/v1/verify", 403, json={"code": codes[1]}, headers=terminal)

    assert await asyncio.to_thread(live.stop) == 0
    log = live.log_path.read_text(encoding="utf-8", errors="replace")

    # Controls: verbose output was captured, with the access log on.
    assert "log_level='DEBUG'" in log, log[:2000]
    if live.extra_env["PASSCODE_LOG_FORMAT"] == "json":
        # Searched as written and as decoded (JSON escapes could hide a value).
        log += "\n" + "\n".join(_check_json_lines(log))
    for line in (
        '"POST /v1/verify HTTP/1.1" 200',
        '"POST /v1/verify/batch HTTP/1.1" 200',
        '"GET /v1/pass HTTP/1.1" 200',
        '"POST /v1/admin/overrides HTTP/1.1" 201',
        '"POST /v1/admin/terminals/{terminal_id}/revoke HTTP/1.1" 204',
        '"GET /v1/pass HTTP/1.1" 401',
    ):
        assert line in log, f"no access-log line {line!r}"

    secrets = {
        "pass prefix": "PC1:",
        **{f"pass {n}": code for n, code in enumerate(codes)},
        **{f"pass {n} body": code[4:40] for n, code in enumerate(codes)},
        "tampered pass": tampered,
        "full name (CJK)": alice_name,
        **{f"name part {part}": part for part in bob_name.split()},
        "terminal key": keys[0],
        "terminal key secret part": keys[0][3:],
        "unknown terminal key": unknown_key,
        "admin key": settings.admin_key,
        "wrong admin key": wrong_admin,
        "server secret": settings.secret,
        **{
            f"ID token {who}": token
            for who, token in (("alice", alice), ("bob", bob), ("expired", expired))
        },
        **{
            f"ID token signature {who}": token.rsplit(".", 1)[1]
            for who, token in (("alice", alice), ("bob", bob))
        },
        **{f"ID token claims {who}": t.split(".")[1][:40] for who, t in (("a", alice), ("b", bob))},
        "DCC text": dcc_text[4:60],
        "broken DCC text": broken[-40:],
        "DCC given name": "Wilhelmina",
        "DCC family name": "Featherstonehaugh",
        "DCC transliterated name": "FEATHERSTONEHAUGH",
        "DCC birth date": dcc_payload["dob"],
        "DCC certificate id": certificate_id,
        "raw user id alice": alice_id,
        "raw user id bob": bob_id,
    }
    leaks = {what: value for what, value in secrets.items() if value in log}
    assert not leaks, "\n".join(
        f"{what}: {line.strip()[:240]}"
        for what, value in leaks.items()
        for line in log.splitlines()
        if value in line
    )
