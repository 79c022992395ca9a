"""Credentials: how terminal and admin keys are kept and compared, and whose pass a token reads.

Already covered elsewhere (not repeated here): every admin endpoint answers a citizen ID token
with 403 and stores nothing, and other wrong credentials with 401
(``test_bad_input.py::test_admin_endpoints_reject_other_credentials``); citizen endpoints reject
foreign-signed, tampered, expired, wrong-audience/issuer, ``alg: none`` and HS256-confusion tokens
with 401 (``test_bad_input.py::test_citizen_endpoints_reject_bad_id_tokens_with_401``); two
citizens get two subjects (``test_citizen.py::test_a_citizen_only_sees_their_own_records``);
hostile ID tokens of every algorithm family against every kind of provider key get 401, never a
500 (``tests/unit/test_identity.py``, ``test_hostile_tokens.py``); credentials in requests the
HTTP parser rejects, or whose bytes are not UTF-8, reach neither a response nor the log
(``test_parser_errors.py``).
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import textwrap
import time
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.api import auth as auth_module
from passcode.config import Settings
from passcode.domain.passfmt import PassClaims, verify_pass
from passcode.domain.privacy import Sealer
from passcode.keys import KEYRING, POOL, TERMINALS
from passcode.service import access as access_module
from passcode.store import terminals as terminals_module
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, ADMIN_KEY, TokenFactory, dev_token, redis_client

RED = {**HEALTHY, "close_contact": True}


async def _tables_holding(pool: asyncpg.Pool, needles: list[str]) -> dict[str, list[str]]:
    """Every public table whose rows, rendered as text (bytea as hex), contain a needle."""
    found: dict[str, list[str]] = {}
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        for row in tables:
            name = row["tablename"]
            hits = await conn.fetchval(
                f'SELECT array_agg(DISTINCT n) FROM "{name}" t, unnest($1::text[]) n'  # noqa: S608  # names from pg_tables
                " WHERE strpos(lower(t::text), lower(n)) > 0",
                needles,
            )
            if hits:
                found[name] = sorted(hits)
    return found


async def _redis_holding(settings: Settings, needles: list[bytes]) -> list[bytes]:
    """Needles found in a key under this app's prefix: its name or value (any Redis type)."""
    assert settings.redis_url is not None
    redis = redis_client(settings)
    try:
        return await _scan_redis(redis, settings.redis_prefix, needles)
    finally:
        await redis.aclose()


async def _scan_redis(redis: aioredis.Redis, prefix: str, needles: list[bytes]) -> list[bytes]:
    hits = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=50_000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            blobs = [await redis.get(key)]
        elif kind == "hash":
            blobs = [b for pair in (await redis.hgetall(key)).items() for b in pair]
        elif kind == "stream":
            blobs = [repr(entry).encode() for entry in await redis.xrange(key)]
        elif kind in {"set", "zset", "list"}:
            blobs = [repr(await redis.dump(key)).encode()]
        else:
            blobs = []
        blob = b"\0".join([key, *(b or b"" for b in blobs)])
        hits += [needle for needle in needles if needle in blob]
    return hits


@pytest.mark.slow
async def test_terminal_keys_are_stored_only_as_their_sha256(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """A terminal's key, shown once at creation, is kept only as SHA-256: the terminals row holds
    exactly ``sha256(key)`` (32 bytes); after the key has been used to verify, no table in
    PostgreSQL and no key or value under the app's Redis prefix holds the key's text, the
    secret part after ``pt_``, or its bytes in hex."""
    made = await (
        await client.post("/v1/admin/terminals", json={"place": "Hash Gate"}, headers=ADMIN)
    ).json()
    key: str = made["key"]
    verified = await client.post("/v1/verify", json={"code": "PC1:XX"}, headers=auth(key))
    assert verified.status == 200, await verified.text()

    pool = client.app[POOL]
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT key_hash FROM terminals WHERE id = $1::uuid", made["id"]
        )
    assert stored == hashlib.sha256(key.encode()).digest()
    assert len(stored) == 32

    needles = [key, key[3:], key.encode().hex()]
    assert await _tables_holding(pool, needles) == {}
    assert await _redis_holding(settings, [n.encode() for n in needles]) == []


@pytest.mark.slow
async def test_the_admin_key_is_never_stored(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """The admin key lives only in the process's settings: after it has created a terminal,
    revoked it and made an override, no PostgreSQL table and nothing under the Redis prefix holds
    the key, its hex, or even its SHA-256 (hex) — it is not stored hashed either."""
    made = await (
        await client.post("/v1/admin/terminals", json={"place": "Admin Gate"}, headers=ADMIN)
    ).json()
    revoked = await client.post(f"/v1/admin/terminals/{made['id']}/revoke", headers=ADMIN)
    assert revoked.status == 204
    ruled = await client.post(
        "/v1/admin/overrides",
        json={"user_id": "admin-store-case", "color": "red", "reason": "positive_test"},
        headers=ADMIN,
    )
    assert ruled.status == 201, await ruled.text()

    digest = hashlib.sha256(ADMIN_KEY.encode()).digest()
    needles = [ADMIN_KEY, ADMIN_KEY.encode().hex(), digest.hex()]
    assert await _tables_holding(client.app[POOL], needles) == {}
    assert await _redis_holding(settings, [n.encode() for n in needles] + [digest]) == []


def _equality_tests_on(function: Any, names: set[str]) -> list[str]:
    """Source of every ``==``/``!=``/``in`` comparison in ``function`` that has one of ``names``
    (a variable, or an attribute such as ``settings.admin_key``) as an operand itself."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or not any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            continue
        for operand in (node.left, *node.comparators):
            name = getattr(operand, "id", None) or getattr(operand, "attr", None)
            if name in names:
                found.append(ast.unparse(node))
    return found


async def test_admin_key_is_compared_in_constant_time(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is proven, and how:

    * Behaviour: the admin decision is made by ``hmac.compare_digest`` (a spy wraps the real
      function for the test) over two 32-byte SHA-256 digests, the presented key's and the
      configured key's. Equal-length inputs of fixed size mean neither the position of the first
      differing character nor the length of a guess changes the comparison's time; it is called
      for the right key, a wrong key of the same length differing in its last character, a
      prefix of the key, and the key plus one character, and only the right key gets through.
    * Structure: ``authorize``'s source (in :mod:`passcode.service.access`) has no
      ``==``/``!=``/``in`` test with the presented or configured key as an operand (an AST
      scan), so no short-circuiting comparison of the keys sits beside the digest one. (Its
      ``key.count(".") == 2`` runs only after a mismatch, to answer 403 rather than 401 to an
      ID token, and compares a count, not the key.)
    """
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access_module.hmac, "compare_digest", spy)
    expected = hashlib.sha256(ADMIN_KEY.encode()).digest()
    cases = {
        ADMIN_KEY: 201,
        ADMIN_KEY[:-1] + ("x" if ADMIN_KEY[-1] != "x" else "y"): 401,
        ADMIN_KEY[:8]: 401,
        ADMIN_KEY + "0": 401,
    }
    for key, status in cases.items():
        calls.clear()
        response = await client.post(
            "/v1/admin/terminals", json={"place": "Timing Gate"}, headers=auth(key)
        )
        assert response.status == status, await response.text()
        assert calls == [(hashlib.sha256(key.encode()).digest(), expected)]
        assert all(len(a) == len(b) == 32 for a, b in calls)

    source_names = {"key", "expected", "admin_key", "bootstrap_key"}
    assert _equality_tests_on(access_module.authorize, source_names) == []


async def test_terminal_key_is_found_by_its_hash_not_compared(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is proven, and how: a terminal key is never compared character by character. The
    directory hashes the presented key (``secret_hash``, spied on) before anything else, and both
    its in-process cache and the PostgreSQL query are keyed by that SHA-256 digest (the cache's
    keys are all 32-byte digests; the SQL selects ``WHERE key_hash = $1``). An attacker timing a
    lookup learns at most about the digest of their own guess, which says nothing about the stored
    key (SHA-256 preimage resistance). Exactness: the key with its last character changed, a
    prefix, and the key plus a character are each unknown (401)."""
    made = await (
        await client.post("/v1/admin/terminals", json={"place": "Lookup Gate"}, headers=ADMIN)
    ).json()
    key: str = made["key"]
    hashed: list[str] = []
    real = terminals_module.secret_hash

    def spy(credential: str) -> bytes:
        hashed.append(credential)
        return real(credential)

    monkeypatch.setattr(terminals_module, "secret_hash", spy)
    wrong_last = key[:-1] + ("A" if key[-1] != "A" else "B")
    for candidate, status in ((key, 200), (wrong_last, 401), (key[:20], 401), (key + "A", 401)):
        hashed.clear()
        response = await client.post("/v1/verify", json={"code": "PC1:XX"}, headers=auth(candidate))
        assert response.status == status, await response.text()
        assert hashed == [candidate]

    directory = client.app[TERMINALS]
    # private: what the directory keeps in memory must be key hashes, never keys
    cached = list(directory._cache)
    assert cached
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cached)
    assert hashlib.sha256(key.encode()).digest() in cached
    assert "key_hash = $1" in inspect.getsource(terminals_module.TerminalDirectory.lookup)
    assert _equality_tests_on(terminals_module.TerminalDirectory.lookup, {"key"}) == []
    assert _equality_tests_on(auth_module.terminal_of, {"key"}) == []


def _claims(client: TestClient[Any, Any], code: str) -> PassClaims:
    now = int(time.time())
    keys = client.app[KEYRING].verification_keys(now)
    return verify_pass(code, keys, now=now, leeway=30, issuer="passcode")


async def test_a_token_for_a_citizen_always_yields_that_citizens_subject(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory
) -> None:
    """No request can name another user: the subject comes only from the verified token's
    issuer and ``sub``. Several distinct tokens for A (other name, other lifetime, minted at other
    times) all yield the subject the database holds for HMAC(A) — and never B's, even when the
    request also carries B's user id or subject in the query string, in ``X-User-Id`` /
    ``X-Forwarded-User`` / ``X-Subject`` headers, or in a body on the GET; the pass is A's
    green one while B's is red."""
    alice_id, bob_id = "citizen-a-subject-case", "citizen-b-subject-case"
    await client.post("/v1/declarations", json=HEALTHY, headers=auth(make_token(user_id=alice_id)))
    bob = make_token(user_id=bob_id)
    assert (await client.post("/v1/declarations", json=RED, headers=auth(bob))).status == 201
    bob_code = (await (await client.get("/v1/pass", headers=auth(bob))).json())["code"]
    bob_subject = _claims(client, bob_code).subject

    sealer = Sealer(settings.secret or "")
    async with client.app[POOL].acquire() as conn:
        alice_subject = await conn.fetchval(
            "SELECT id FROM subjects WHERE user_hash = $1",
            sealer.user_hash(settings.idp_issuer, alice_id),
        )
    assert alice_subject is not None
    assert alice_subject != bob_subject

    bob_names = {"user_id": bob_id, "sub": bob_id, "subject": bob_code}
    attempts: list[dict[str, Any]] = [
        {},
        {"params": bob_names},
        {"headers": {"X-User-Id": bob_id, "X-Forwarded-User": bob_id, "X-Subject": bob_id}},
        {"json": bob_names},
    ]
    tokens = [
        make_token(user_id=alice_id),
        make_token(user_id=alice_id, name="Another Name"),
        make_token(user_id=alice_id, ttl=60),
    ]
    for token in tokens:
        for attempt in attempts:
            headers = {**attempt.get("headers", {}), **auth(token)}
            extra = {k: v for k, v in attempt.items() if k != "headers"}
            response = await client.get("/v1/pass", headers=headers, **extra)
            assert response.status == 200, await response.text()
            claims = _claims(client, (await response.json())["code"])
            assert claims.subject == alice_subject
            assert claims.color.value == "green"


async def test_a_forged_token_for_a_citizen_with_a_pass_gets_401(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory
) -> None:
    """A has declared and holds a pass. A token with A's ``sub``, issuer, audience and the dev
    kid, but signed by another Ed25519 key, gets 401 on every citizen endpoint and the body holds
    no pass; the genuine token still reads A's pass (control)."""
    alice_id = "citizen-forged-case"
    genuine = make_token(user_id=alice_id)
    assert (
        await client.post("/v1/declarations", json=HEALTHY, headers=auth(genuine))
    ).status == 201
    forged = dev_token(settings, alice_id, ttl=600, key=Ed25519PrivateKey.generate())
    for path in ("/v1/pass", "/v1/pass.png", "/v1/pass.svg"):
        response = await client.get(path, headers=auth(forged))
        assert response.status == 401, path
        assert response.content_type == "application/problem+json"
        assert b"PC1:" not in await response.read()
    declared = await client.post("/v1/declarations", json=RED, headers=auth(forged))
    assert declared.status == 401
    control = await client.get("/v1/pass", headers=auth(genuine))
    assert control.status == 200
    assert _claims(client, (await control.json())["code"]).color.value == "green"
