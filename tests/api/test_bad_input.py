"""Bad requests on every endpoint: each gets its exact 4xx as an RFC 9457 problem, never a 500.

Table-driven: every endpoint that reads a body gets the same battery of transport faults (media
type, size with and without Content-Length, encoding, JSON syntax, JSON shape) plus the schema and
semantic faults of its own body. Then: nothing a rejected request carried is stored, routing errors
are problems too, and each credential fault gets 401 or 403.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.config import Settings
from passcode.domain.identity import mint_dev_token
from passcode.store.keyring import load_or_create_ed25519
from passcode.testing import HEALTHY, auth
from passcode.wiring import DEV_IDP_KID, dev_idp_key_path
from tests.helpers import ADMIN, TokenFactory, assert_exact_problem, stored_rows

PROBLEM_JSON = "application/problem+json"
DEFAULTS = Settings()  # the conftest settings keep the default limits
MAX_BODY = DEFAULTS.max_body
MAX_BATCH_BODY = DEFAULTS.max_batch_body

# Which credential each endpoint takes, and a body it would accept.
VERIFY = "/v1/verify"
BATCH = "/v1/verify/batch"
DECLARE = "/v1/declarations"
OVERRIDE = "/v1/admin/overrides"
TERMINAL = "/v1/admin/terminals"

CREDENTIAL = {
    VERIFY: "terminal",
    BATCH: "terminal",
    DECLARE: "citizen",
    OVERRIDE: "admin",
    TERMINAL: "admin",
}
VALID_BODY: dict[str, dict[str, Any]] = {
    VERIFY: {"code": "PC1:NOTAPASS"},
    BATCH: {"scans": [{"code": "PC1:NOTAPASS"}]},
    DECLARE: HEALTHY,
    OVERRIDE: {"user_id": "citizen-bad-input", "color": "red", "reason": "positive_test"},
    TERMINAL: {"place": "Bad Input Mall, Door 3"},
}
LIMIT = {
    VERIFY: DEFAULTS.max_verify_body,
    BATCH: MAX_BATCH_BODY,
    DECLARE: MAX_BODY,
    OVERRIDE: MAX_BODY,
    TERMINAL: MAX_BODY,
}
SHORT = {
    VERIFY: "verify",
    BATCH: "batch",
    DECLARE: "declare",
    OVERRIDE: "override",
    TERMINAL: "terminal",
}

_ABSENT = object()


@dataclass(frozen=True)
class Case:
    """One bad request: where it goes, what it carries, and the exact answer it must get."""

    name: str
    path: str
    status: int
    json: Any = _ABSENT  # serialised with json.dumps (allow_nan=False) when given
    raw: bytes | None = None  # sent verbatim when given
    content_type: str | None = "application/json"  # None: no Content-Type header at all
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # send as an async generator: Transfer-Encoding chunked, no length
    slugs: tuple[str, ...] = ()  # acceptable problem type slugs (default by status)

    @property
    def id(self) -> str:
        return f"{SHORT[self.path]}-{self.name}"

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        assert self.json is not _ABSENT
        return json.dumps(self.json, ensure_ascii=False).encode()


def _padded(body: dict[str, Any], size: int) -> bytes:
    """Valid JSON of exactly ``size`` bytes: the body followed by insignificant whitespace."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _transport_cases(path: str) -> list[Case]:
    """Faults every body-reading endpoint must answer the same way."""
    body = VALID_BODY[path]
    good = json.dumps(body).encode()
    limit = LIMIT[path]
    return [
        Case("text-plain", path, 415, raw=good, content_type="text/plain"),
        Case(
            "form-encoded",
            path,
            415,
            raw=b"code=PC1%3AX",
            content_type="application/x-www-form-urlencoded",
        ),
        Case("no-content-type", path, 415, raw=good, content_type=None),
        Case(
            "json-latin1-charset",
            path,
            415,
            raw=good,
            content_type="application/json; charset=iso-8859-1",
        ),
        Case("json-suffix-type", path, 415, raw=good, content_type="application/problem+json"),
        Case("too-large-content-length", path, 413, raw=_padded(body, limit + 1)),
        Case("too-large-chunked", path, 413, raw=_padded(body, limit + 1), chunked=True),
        Case("far-too-large-chunked", path, 413, raw=_padded(body, 2 * limit + 10), chunked=True),
        Case("empty-body", path, 400, raw=b""),
        Case("invalid-json", path, 400, raw=b'{"code": '),
        Case("trailing-garbage", path, 400, raw=good + b" }"),
        Case("non-utf8-bytes", path, 400, raw=b'{"place": "caf\xe9"}'),
        Case("lone-surrogate-bytes", path, 400, raw=b'{"place": "\xed\xa0\x80"}'),
        Case("lone-surrogate-escape", path, 400, raw=b'{"place": "\\ud800", "code": "\\udfff"}'),
        Case("utf16-encoded", path, 400, raw=json.dumps(body).encode("utf-16")),
        Case("utf32-encoded", path, 400, raw=json.dumps(body).encode("utf-32")),
        Case("utf8-bom", path, 400, raw=b"\xef\xbb\xbf" + good),
        Case("deeply-nested", path, 400, raw=b"[" * 2000 + b"]" * 2000),
        Case("json-array", path, 400, json=[body]),
        Case("json-string", path, 400, json="hello"),
        Case("json-number", path, 400, json=42),
        Case("json-null", path, 400, json=None),
        Case("empty-object", path, 400, json={}),
        Case("unknown-field", path, 400, json={**body, "extra": 1}),
    ]


def _missing_each(path: str, required: list[str]) -> list[Case]:
    body = VALID_BODY[path]
    return [
        Case(f"missing-{name}", path, 400, json={k: v for k, v in body.items() if k != name})
        for name in required
    ]


def _with(path: str, **changes: Any) -> dict[str, Any]:
    return {**VALID_BODY[path], **changes}


def _scan(**changes: Any) -> dict[str, Any]:
    return {"code": "PC1:NOTAPASS", **changes}


SCHEMA_CASES: list[Case] = [
    # POST /v1/verify
    *_missing_each(VERIFY, ["code"]),
    Case("code-empty", VERIFY, 400, json=_scan(code="")),
    Case("code-number", VERIFY, 400, json=_scan(code=12345)),
    Case("code-null", VERIFY, 400, json=_scan(code=None)),
    Case("code-too-long", VERIFY, 400, json=_scan(code="PC1:" + "A" * 4293)),
    Case("scan-id-not-uuid", VERIFY, 400, json=_scan(scan_id="not-a-uuid")),
    Case("scan-id-short-uuid", VERIFY, 400, json=_scan(scan_id=str(uuid.uuid4())[:-1])),
    Case("scan-id-number", VERIFY, 400, json=_scan(scan_id=7)),
    Case("scan-id-null", VERIFY, 400, json=_scan(scan_id=None)),
    Case("scanned-at-yesterday", VERIFY, 400, json=_scan(scanned_at="yesterday")),
    Case("scanned-at-month-13", VERIFY, 400, json=_scan(scanned_at="2026-13-45T00:00:00Z")),
    Case("scanned-at-feb-30", VERIFY, 400, json=_scan(scanned_at="2026-02-30T10:00:00Z")),
    Case("scanned-at-hour-25", VERIFY, 400, json=_scan(scanned_at="2026-01-01T25:00:00Z")),
    Case("scanned-at-no-offset", VERIFY, 400, json=_scan(scanned_at="2026-01-01T10:00:00")),
    Case("scanned-at-epoch-number", VERIFY, 400, json=_scan(scanned_at=1767225600)),
    # POST /v1/verify/batch
    *_missing_each(BATCH, ["scans"]),
    Case("scans-empty", BATCH, 400, json={"scans": []}),
    Case("scans-501", BATCH, 400, json={"scans": [_scan() for _ in range(501)]}),
    Case("scans-object", BATCH, 400, json={"scans": _scan()}),
    Case("scan-item-string", BATCH, 400, json={"scans": ["PC1:NOTAPASS"]}),
    Case("scan-item-unknown-field", BATCH, 400, json={"scans": [_scan(place="Gate B")]}),
    Case(
        "scan-item-missing-code",
        BATCH,
        400,
        json={"scans": [_scan(), {"scan_id": str(uuid.uuid4())}]},
    ),
    Case("scan-item-bad-uuid", BATCH, 400, json={"scans": [_scan(), _scan(scan_id="xyz")]}),
    Case(
        "scan-item-month-13",
        BATCH,
        400,
        json={"scans": [_scan(), _scan(scanned_at="2026-13-45T00:00:00Z")]},
    ),
    Case("scan-item-yesterday", BATCH, 400, json={"scans": [_scan(scanned_at="yesterday")]}),
    # POST /v1/declarations
    *_missing_each(DECLARE, ["temperature_c", "symptoms", "regions_visited", "close_contact"]),
    Case("temperature-80", DECLARE, 400, json=_with(DECLARE, temperature_c=80)),
    Case("temperature-minus-5", DECLARE, 400, json=_with(DECLARE, temperature_c=-5)),
    Case("temperature-string", DECLARE, 400, json=_with(DECLARE, temperature_c="36.6")),
    Case("temperature-bool", DECLARE, 400, json=_with(DECLARE, temperature_c=True)),
    Case("temperature-null", DECLARE, 400, json=_with(DECLARE, temperature_c=None)),
    Case(
        "temperature-nan",
        DECLARE,
        400,
        raw=b'{"temperature_c": NaN, "symptoms": [], "regions_visited": [], "close_contact": false}',
    ),
    Case(
        "temperature-infinity",
        DECLARE,
        400,
        raw=b'{"temperature_c": Infinity, "symptoms": [], "regions_visited": [], "close_contact": false}',
    ),
    Case(
        "temperature-1e400",
        DECLARE,
        400,
        raw=b'{"temperature_c": 1e400, "symptoms": [], "regions_visited": [], "close_contact": false}',
    ),
    Case("symptom-not-in-enum", DECLARE, 400, json=_with(DECLARE, symptoms=["zombie_bite"])),
    Case("symptom-wrong-case", DECLARE, 400, json=_with(DECLARE, symptoms=["Cough"])),
    Case("symptoms-duplicate", DECLARE, 400, json=_with(DECLARE, symptoms=["cough", "cough"])),
    Case("symptoms-string", DECLARE, 400, json=_with(DECLARE, symptoms="cough")),
    Case("symptom-number", DECLARE, 400, json=_with(DECLARE, symptoms=[1])),
    Case(
        "regions-33",
        DECLARE,
        400,
        json=_with(DECLARE, regions_visited=[f"Region {i}" for i in range(33)]),
    ),
    Case("regions-duplicate", DECLARE, 400, json=_with(DECLARE, regions_visited=["武汉", "武汉"])),
    Case("region-empty", DECLARE, 400, json=_with(DECLARE, regions_visited=[""])),
    Case("region-65-chars", DECLARE, 400, json=_with(DECLARE, regions_visited=["x" * 65])),
    Case("region-control-char", DECLARE, 400, json=_with(DECLARE, regions_visited=["Wu\nhan"])),
    Case("region-number", DECLARE, 400, json=_with(DECLARE, regions_visited=[42])),
    Case("close-contact-string", DECLARE, 400, json=_with(DECLARE, close_contact="no")),
    Case("close-contact-int", DECLARE, 400, json=_with(DECLARE, close_contact=0)),
    Case(
        "idempotency-key-too-long",
        DECLARE,
        400,
        json=HEALTHY,
        headers={"Idempotency-Key": "k" * 129},
    ),
    Case(
        "idempotency-key-non-ascii",
        DECLARE,
        400,
        json=HEALTHY,
        headers={"Idempotency-Key": "ключ-1"},
    ),
    Case("idempotency-key-space", DECLARE, 400, json=HEALTHY, headers={"Idempotency-Key": "a b"}),
    Case("idempotency-key-empty", DECLARE, 400, json=HEALTHY, headers={"Idempotency-Key": ""}),
    # POST /v1/admin/overrides
    *_missing_each(OVERRIDE, ["user_id", "color", "reason"]),
    Case("color-blue", OVERRIDE, 400, json=_with(OVERRIDE, color="blue")),
    Case("color-null", OVERRIDE, 400, json=_with(OVERRIDE, color=None)),
    Case("color-upper-case", OVERRIDE, 400, json=_with(OVERRIDE, color="RED")),
    Case("reason-unknown", OVERRIDE, 400, json=_with(OVERRIDE, reason="because")),
    Case("reason-verify-code", OVERRIDE, 400, json=_with(OVERRIDE, reason="status_red")),
    Case("user-id-empty", OVERRIDE, 400, json=_with(OVERRIDE, user_id="")),
    Case("user-id-129", OVERRIDE, 400, json=_with(OVERRIDE, user_id="u" * 129)),
    Case("user-id-number", OVERRIDE, 400, json=_with(OVERRIDE, user_id=12345)),
    Case("valid-from-yesterday", OVERRIDE, 400, json=_with(OVERRIDE, valid_from="yesterday")),
    Case(
        "valid-from-month-13",
        OVERRIDE,
        400,
        json=_with(OVERRIDE, valid_from="2026-13-45T00:00:00Z"),
    ),
    Case(
        "valid-until-no-offset",
        OVERRIDE,
        400,
        json=_with(OVERRIDE, valid_until="2030-01-01T00:00:00"),
    ),
    Case(
        "valid-until-before-valid-from",
        OVERRIDE,
        400,
        json=_with(OVERRIDE, valid_from="2030-01-02T00:00:00Z", valid_until="2030-01-01T00:00:00Z"),
    ),
    Case(
        "valid-until-equals-valid-from",
        OVERRIDE,
        400,
        json=_with(OVERRIDE, valid_from="2030-01-01T00:00:00Z", valid_until="2030-01-01T00:00:00Z"),
    ),
    Case(
        "valid-until-in-the-past",
        OVERRIDE,
        400,
        json=_with(OVERRIDE, valid_until="2020-01-01T00:00:00Z"),
    ),
    # POST /v1/admin/terminals
    *_missing_each(TERMINAL, ["place"]),
    Case("place-empty", TERMINAL, 400, json={"place": ""}),
    Case("place-201", TERMINAL, 400, json={"place": "p" * 201}),
    Case("place-number", TERMINAL, 400, json={"place": 5}),
    Case("place-list", TERMINAL, 400, json={"place": ["Gate A"]}),
    Case("key-supplied", TERMINAL, 400, json={"place": "Gate A", "key": "pt_chosen"}),
]

CASES: list[Case] = [case for path in CREDENTIAL for case in _transport_cases(path)] + SCHEMA_CASES


async def _chunks(raw: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def send(
    client: TestClient[Any, Any], case: Case, credential: dict[str, str]
) -> ClientResponse:
    headers = {**credential, **case.headers}
    skip: list[str] = []
    if case.content_type is None:
        skip.append("Content-Type")
    else:
        headers["Content-Type"] = case.content_type
    raw = case.payload()
    data: Any = _chunks(raw) if case.chunked else raw
    return await client.post(case.path, data=data, headers=headers, skip_auto_headers=skip)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_bad_request_gets_its_exact_problem_and_stores_nothing(
    client: TestClient[Any, Any], make_token: TokenFactory, terminal_key: str, case: Case
) -> None:
    """Each malformed request, with a valid credential, gets the exact 4xx as problem+json, never a
    500, the body's ``status`` equal to the HTTP status; and no row or scan is stored for it."""
    credential = {
        "terminal": auth(terminal_key),
        "citizen": auth(make_token()),
        "admin": ADMIN,
    }[CREDENTIAL[case.path]]
    before = await stored_rows(client)
    response = await send(client, case, credential)
    await assert_exact_problem(response, case.status, case.slugs)
    assert await stored_rows(client) == before


@pytest.mark.parametrize("path", list(CREDENTIAL), ids=lambda p: SHORT[p])
async def test_a_body_of_exactly_the_limit_is_read(
    client: TestClient[Any, Any], make_token: TokenFactory, terminal_key: str, path: str
) -> None:
    """The size limit is inclusive: a valid body padded to exactly the limit is accepted, both with
    Content-Length and chunked, so the 413 cases above are rejected for size and nothing else."""
    credential = {
        "terminal": auth(terminal_key),
        "citizen": auth(make_token()),
        "admin": ADMIN,
    }[CREDENTIAL[path]]
    raw = _padded(VALID_BODY[path], LIMIT[path])
    for data in (raw, _chunks(raw)):
        response = await client.post(
            path, data=data, headers={**credential, "Content-Type": "application/json"}
        )
        assert response.status in {200, 201}, await response.text()


async def test_strict_parsing_still_accepts_valid_json_variants(
    client: TestClient[Any, Any],
) -> None:
    """Control for the encoding cases: a ``charset=UTF-8`` parameter (any case), raw UTF-8 text and
    an escaped surrogate *pair* are all valid JSON and accepted; the place round-trips exactly."""
    place = "地铁2号线 🚇 Gate"
    for content_type, raw in (
        (
            "application/json; charset=UTF-8",
            json.dumps({"place": place}, ensure_ascii=False).encode(),
        ),
        ("application/json;charset=utf-8", json.dumps({"place": place}).encode()),  # \ud83d\ude87
        ("Application/JSON", json.dumps({"place": place}).encode()),
    ):
        response = await client.post(
            TERMINAL, data=raw, headers={**ADMIN, "Content-Type": content_type}
        )
        assert response.status == 201, await response.text()
        assert (await response.json())["place"] == place


async def test_rejected_declarations_store_nothing_for_the_citizen(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """After a run of rejected declarations (schema, syntax, media type, size, bad key) the citizen
    still has no pass (404 no-declaration), and the Idempotency-Key used by a rejected body is not
    burned: the first valid body under that key is stored fresh, not answered 409 or replayed."""
    token = make_token(user_id=f"citizen-rejected-{uuid.uuid4().hex}")
    headers = {**auth(token), "Idempotency-Key": "decl-rejected-1"}
    rejected = [case for case in CASES if case.path == DECLARE]
    for case in rejected:
        response = await send(client, case, {**headers, **case.headers})
        await assert_exact_problem(response, case.status, case.slugs)

    for path in ("/v1/pass", "/v1/pass.png", "/v1/pass.svg"):
        got = await client.get(path, headers=auth(token))
        await assert_exact_problem(got, 404, ("no-declaration",))

    stored = await client.post(DECLARE, json=HEALTHY, headers=headers)
    assert stored.status == 201, await stored.text()
    assert "Idempotent-Replayed" not in stored.headers
    assert (await client.get("/v1/pass", headers=auth(token))).status == 200


ROUTING_CASES = [
    pytest.param("GET", "/v1/nope", 404, None, id="unknown-path-get"),
    pytest.param("POST", "/v1/verify/", 404, None, id="trailing-slash"),
    pytest.param("POST", "/v2/verify", 404, None, id="unknown-version"),
    pytest.param("GET", "/v1/admin/terminals/x/revoke/more", 404, None, id="deeper-path"),
    pytest.param("GET", "/v1/verify", 405, {"POST"}, id="get-verify"),
    pytest.param("GET", "/v1/verify/batch", 405, {"POST"}, id="get-batch"),
    pytest.param("PUT", "/v1/declarations", 405, {"POST"}, id="put-declarations"),
    pytest.param("DELETE", "/v1/pass", 405, {"GET", "HEAD"}, id="delete-pass"),
    pytest.param("POST", "/v1/keys", 405, {"GET", "HEAD"}, id="post-keys"),
    pytest.param("GET", "/v1/admin/overrides", 405, {"POST"}, id="get-overrides"),
    pytest.param("PATCH", "/v1/admin/terminals", 405, {"POST"}, id="patch-terminals"),
    pytest.param(
        "GET", f"/v1/admin/terminals/{uuid.uuid4()}/revoke", 405, {"POST"}, id="get-revoke"
    ),
]


@pytest.mark.parametrize(("method", "path", "status", "allow"), ROUTING_CASES)
async def test_routing_errors_are_problems(
    client: TestClient[Any, Any], method: str, path: str, status: int, allow: set[str] | None
) -> None:
    """An unknown path is a 404 problem; a known path with the wrong method is a 405 problem whose
    Allow header names exactly the methods the path serves."""
    response = await client.request(method, path, headers=ADMIN)
    await assert_exact_problem(response, status)
    if allow is not None:
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allow


# Credentials ----------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _citizen_tokens(settings: Settings, good: str) -> dict[str, str | None]:
    """Header values for each way an ID token can be wrong (None: no header at all)."""
    now = int(time.time())
    claims = {
        "iss": settings.idp_issuer,
        "aud": settings.idp_audience,
        "sub": "citizen-auth-case",
        "name": "张小三",
        "iat": now,
        "exp": now + 600,
    }
    other_key = Ed25519PrivateKey.generate()

    def dev(key: Ed25519PrivateKey = other_key, **overrides: Any) -> str:
        params: dict[str, Any] = {
            "kid": DEV_IDP_KID,
            "issuer": settings.idp_issuer,
            "audience": settings.idp_audience,
            "user_id": "citizen-auth-case",
            "name": "张小三",
            "now": now,
            "ttl": 600,
            **overrides,
        }
        return mint_dev_token(key, **params)

    real_key = load_or_create_ed25519(dev_idp_key_path(settings))
    header, payload, _ = good.split(".")
    return {
        "no-header": None,
        "bearer-empty": "Bearer ",
        "basic-scheme": "Basic " + base64.b64encode(b"citizen:pw").decode(),
        "token-without-scheme": good,
        "garbage": "Bearer not-a-jwt",
        "three-garbage-parts": "Bearer aaa.bbb.ccc",
        "other-key-same-kid": "Bearer " + dev(),
        "unknown-kid": "Bearer " + dev(real_key, kid="someone-else"),
        "expired": "Bearer " + dev(real_key, now=now - 7200, ttl=600),
        "wrong-audience": "Bearer " + dev(real_key, audience="another-service"),
        "wrong-issuer": "Bearer " + dev(real_key, issuer="https://evil.example"),
        "alg-none": "Bearer "
        + _b64({"alg": "none", "kid": DEV_IDP_KID})
        + "."
        + _b64(claims)
        + ".",
        "hs256-confusion": "Bearer "
        + jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": DEV_IDP_KID}),
        "tampered-payload": "Bearer "
        + header
        + "."
        + _b64({**claims, "sub": "someone-else"})
        + "."
        + good.split(".")[2],
        "admin-key": "Bearer " + ADMIN["Authorization"].split(" ", 1)[1],
        "unsigned-copy": "Bearer " + header + "." + payload + ".",
    }


CITIZEN_TOKEN_FAULTS = [
    "no-header",
    "bearer-empty",
    "basic-scheme",
    "token-without-scheme",
    "garbage",
    "three-garbage-parts",
    "other-key-same-kid",
    "unknown-kid",
    "expired",
    "wrong-audience",
    "wrong-issuer",
    "alg-none",
    "hs256-confusion",
    "tampered-payload",
    "admin-key",
    "unsigned-copy",
]
CITIZEN_ENDPOINTS = [
    pytest.param("POST", DECLARE, id="declare"),
    pytest.param("GET", "/v1/pass", id="pass"),
    pytest.param("GET", "/v1/pass.png", id="pass-png"),
    pytest.param("GET", "/v1/pass.svg", id="pass-svg"),
]


@pytest.mark.parametrize("fault", CITIZEN_TOKEN_FAULTS)
@pytest.mark.parametrize(("method", "path"), CITIZEN_ENDPOINTS)
async def test_citizen_endpoints_reject_bad_id_tokens_with_401(
    client: TestClient[Any, Any],
    settings: Settings,
    make_token: TokenFactory,
    method: str,
    path: str,
    fault: str,
) -> None:
    """Missing, malformed, foreign-signed, expired, wrong-audience or wrong-issuer ID tokens get 401
    problem+json with ``WWW-Authenticate: Bearer`` on every citizen endpoint; nothing is stored."""
    good = make_token(user_id="citizen-auth-case")
    value = _citizen_tokens(settings, good)[fault]
    headers = {} if value is None else {"Authorization": value}
    before = await stored_rows(client)
    response = await client.request(
        method, path, json=HEALTHY if method == "POST" else None, headers=headers
    )
    await assert_exact_problem(response, 401)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert await stored_rows(client) == before


async def test_the_good_token_used_to_build_the_bad_ones_is_accepted(
    client: TestClient[Any, Any], make_token: TokenFactory
) -> None:
    """Control for the token cases above: the unaltered token declares, so each 401 is down to the
    one thing that case changed."""
    token = make_token(user_id="citizen-auth-case")
    response = await client.post(DECLARE, json=HEALTHY, headers=auth(token))
    assert response.status == 201, await response.text()


ADMIN_ENDPOINTS = [
    pytest.param(OVERRIDE, VALID_BODY[OVERRIDE], id="overrides"),
    pytest.param(TERMINAL, VALID_BODY[TERMINAL], id="terminals"),
    pytest.param(f"/v1/admin/terminals/{uuid.uuid4()}/revoke", None, id="revoke"),
]
ADMIN_FAULTS = [
    pytest.param("none", 401, id="no-key"),
    pytest.param("wrong", 401, id="wrong-key"),
    pytest.param("prefix", 401, id="admin-key-prefix"),
    pytest.param("basic", 401, id="basic-scheme"),
    pytest.param("terminal", 401, id="terminal-key"),
    pytest.param("citizen", 403, id="citizen-id-token"),
]


@pytest.mark.parametrize(("fault", "status"), ADMIN_FAULTS)
@pytest.mark.parametrize(("path", "body"), ADMIN_ENDPOINTS)
async def test_admin_endpoints_reject_other_credentials(
    client: TestClient[Any, Any],
    make_token: TokenFactory,
    terminal_key: str,
    path: str,
    body: dict[str, Any] | None,
    fault: str,
    status: int,
) -> None:
    """Admin endpoints: no key, a wrong key, a terminal key → 401; a valid citizen ID token → 403
    (authenticated, but not an authority). Nothing is stored either way."""
    admin_key = ADMIN["Authorization"].split(" ", 1)[1]
    headers = {
        "none": {},
        "wrong": auth("not-the-admin-key"),
        "prefix": auth(admin_key[:-1]),
        "basic": {"Authorization": "Basic " + base64.b64encode(admin_key.encode()).decode()},
        "terminal": auth(terminal_key),
        "citizen": auth(make_token()),
    }[fault]
    before = await stored_rows(client)
    response = await client.post(path, json=body, headers=headers)
    await assert_exact_problem(response, status)
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert await stored_rows(client) == before


TERMINAL_ENDPOINTS = [
    pytest.param(VERIFY, VALID_BODY[VERIFY], id="verify"),
    pytest.param(BATCH, VALID_BODY[BATCH], id="batch"),
]


@pytest.mark.parametrize("fault", ["none", "unknown", "no-prefix", "too-long", "admin", "citizen"])
@pytest.mark.parametrize(("path", "body"), TERMINAL_ENDPOINTS)
async def test_terminal_endpoints_reject_other_credentials_with_401(
    client: TestClient[Any, Any],
    make_token: TokenFactory,
    path: str,
    body: dict[str, Any],
    fault: str,
) -> None:
    """Verify endpoints answer 401 to a missing or unknown terminal key, and to an admin key or a
    citizen ID token (neither is a terminal credential); no scan is recorded."""
    headers = {
        "none": {},
        "unknown": auth("pt_" + "x" * 43),
        "no-prefix": auth("x" * 46),
        "too-long": auth("pt_" + "x" * 200),
        "admin": ADMIN,
        "citizen": auth(make_token()),
    }[fault]
    before = await stored_rows(client)
    response = await client.post(path, json=body, headers=headers)
    await assert_exact_problem(response, 401)
    assert await stored_rows(client) == before


@pytest.mark.parametrize(("path", "body"), TERMINAL_ENDPOINTS)
async def test_revoked_terminal_gets_403(
    client: TestClient[Any, Any], terminal_key: str, path: str, body: dict[str, Any]
) -> None:
    """Once revoked, a terminal's key gets 403 terminal-revoked (not 401: the key is known) and its
    scans are not recorded."""
    created = await client.post(TERMINAL, json={"place": "Revoked Gate"}, headers=ADMIN)
    assert created.status == 201
    made = await created.json()
    revoked = await client.post(f"/v1/admin/terminals/{made['id']}/revoke", headers=ADMIN)
    assert revoked.status == 204, await revoked.text()
    before = await stored_rows(client)
    response = await client.post(path, json=body, headers=auth(made["key"]))
    await assert_exact_problem(response, 403, ("terminal-revoked",))
    assert await stored_rows(client) == before
