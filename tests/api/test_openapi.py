"""The OpenAPI document is valid 3.1, complete, and true: real responses match what it declares."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from passcode.api.openapi import openapi_document
from passcode.api.problems import UNMATCHED
from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.identity import s256_challenge
from passcode.keys import DRAIN
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, BASE, Contract, TokenFactory, role_headers
from tests.trust_material import b64, dsc, issuer_jwk, issuer_url, kid64


@pytest.fixture
async def contract(client: TestClient[Any, Any]) -> Contract:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    made = Contract(document)
    await made.check(response)
    return made


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve_every_ref(document: dict[str, Any]) -> int:
    """Resolve each ``$ref`` in the document (openapi-spec-validator leaves unused ones alone)."""
    resolver = Registry().with_resource(BASE, DRAFT202012.create_resource(document)).resolver(BASE)
    refs = _refs(document)
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        resolver.lookup(ref)
    return len(refs)


async def test_openapi_json_is_a_valid_openapi_3_1_document(client: TestClient[Any, Any]) -> None:
    """GET /openapi.json serves the built document; it passes openapi-spec-validator's OpenAPI 3.1
    rules, every component schema is a valid 2020-12 schema, and every $ref resolves. Controls show
    each check bites: an invalid schema keyword, a response without a description, an unknown
    operation field and a dangling $ref are each caught."""
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"].startswith("3.1.")
    validate(document)
    validate(document, cls=OpenAPIV31SpecValidator)
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert _resolve_every_ref(document) > 20

    bad_type = copy.deepcopy(document)
    bad_type["components"]["schemas"]["Health"]["properties"]["status"]["type"] = "strang"
    no_description = copy.deepcopy(document)
    del no_description["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    unknown_field = copy.deepcopy(document)
    unknown_field["paths"]["/v1/verify"]["post"]["bogus"] = True
    for bad in (bad_type, no_description, unknown_field):
        with pytest.raises(OpenAPIValidationError):
            validate(bad, cls=OpenAPIV31SpecValidator)
    dangling = copy.deepcopy(document)
    dangling["paths"]["/v1/verify"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ] = {"$ref": "#/components/schemas/NoSuchSchema"}
    with pytest.raises(Unresolvable):
        _resolve_every_ref(dangling)


async def test_every_route_is_documented_and_every_operation_is_routed(
    client: TestClient[Any, Any], contract: Contract
) -> None:
    """The aiohttp router and the document list the same paths and, per path, the same methods
    (HEAD, which aiohttp adds beside every GET, aside; so is the catch-all route that answers
    404 and 405 as problems)."""
    routed: dict[str, set[str]] = {}
    for resource in client.app.router.resources():
        if resource.name == UNMATCHED:
            continue
        methods = {route.method.lower() for route in resource if route.method != hdrs.METH_HEAD}
        routed.setdefault(resource.canonical, set()).update(methods)
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    documented = {
        path: {m for m in item if m in methods} for path, item in contract.document["paths"].items()
    }
    assert set(routed) == set(documented)
    assert routed == documented


async def test_real_responses_match_the_document(
    client: TestClient[Any, Any], contract: Contract, make_token: TokenFactory
) -> None:
    """A full flow (declare, pass as JSON/PNG/SVG, keys and 304, verify admit/deny/invalid, batch,
    override, terminal create/revoke, health, readiness, metrics) and errors 400/401/403/404/409/413/415 on
    each kind of endpoint: every status is declared for its operation, with its content type, its
    required headers, and a JSON body valid under the declared 2020-12 schema. Every documented
    operation is exercised at least once."""
    c = contract

    async def call(
        method: str,
        path: str,
        status: int,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Any:
        if json_body is not None and status < 300:
            c.check_request(method, path, json_body)
        response = await client.request(
            method, path, json=json_body, data=data, headers=headers or {}
        )
        raw = await c.check(response)
        assert response.status == status, raw[:300]
        if response.content_type.endswith("json"):
            return json.loads(raw)
        return raw

    await call("GET", "/healthz", 200)
    await call("GET", "/readyz", 200)
    await call("GET", "/metrics", 200)
    keys = await client.get("/v1/keys")
    await c.check(keys)
    assert keys.status == 200
    await call("GET", "/v1/keys", 304, headers={"If-None-Match": keys.headers["ETag"]})

    created = await call(
        "POST", "/v1/admin/terminals", 201, json_body={"place": "OpenAPI Gate"}, headers=ADMIN
    )
    terminal = auth(created["key"])

    green_user, red_user = f"oa-green-{uuid.uuid4().hex}", f"oa-red-{uuid.uuid4().hex}"
    green, red = auth(make_token(user_id=green_user)), auth(make_token(user_id=red_user))
    await call("GET", "/v1/pass", 404, headers=green)
    await call("GET", "/v1/pass.png", 404, headers=green)
    await call("GET", "/v1/pass.svg", 404, headers=green)
    keyed = {**green, "Idempotency-Key": "oa-decl-1"}
    first = await call("POST", "/v1/declarations", 201, json_body=HEALTHY, headers=keyed)
    replay = await call("POST", "/v1/declarations", 201, json_body=HEALTHY, headers=keyed)
    assert replay == first
    await call(
        "POST", "/v1/declarations", 409, json_body={**HEALTHY, "close_contact": True}, headers=keyed
    )
    await call("POST", "/v1/declarations", 201, json_body=HEALTHY, headers=red)
    green_pass = await call("GET", "/v1/pass", 200, headers=green)
    await call("GET", "/v1/pass.png", 200, headers=green)
    await call("GET", "/v1/pass.svg", 200, headers=green)
    red_code = (await call("GET", "/v1/pass", 200, headers=red))["code"]
    await call(
        "POST",
        "/v1/admin/overrides",
        201,
        json_body={
            "user_id": red_user,
            "color": "red",
            "reason": "positive_test",
            "valid_from": "2020-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00+08:00",
        },
        headers=ADMIN,
    )

    scan = {
        "code": green_pass["code"],
        "scan_id": str(uuid.uuid4()),
        "scanned_at": (datetime.now(UTC) - timedelta(minutes=1))
        .astimezone(timezone(timedelta(hours=8)))
        .isoformat(timespec="milliseconds"),
    }
    admitted = await call("POST", "/v1/verify", 200, json_body=scan, headers=terminal)
    assert (admitted["decision"], admitted["scan_id"]) == ("admit", scan["scan_id"])
    denied = await call("POST", "/v1/verify", 200, json_body={"code": red_code}, headers=terminal)
    assert denied["decision"] == "deny"
    invalid = await call(
        "POST", "/v1/verify", 200, json_body={"code": "PC1:GARBAGE"}, headers=terminal
    )
    assert invalid["decision"] == "invalid"
    unsupported = await call(
        "POST", "/v1/verify", 200, json_body={"code": "https://x.example/"}, headers=terminal
    )
    assert unsupported["decision"] == "invalid"
    batch = await call(
        "POST",
        "/v1/verify/batch",
        200,
        json_body={"scans": [{"code": green_pass["code"]}, {"code": red_code}, {"code": "nope"}]},
        headers=terminal,
    )
    assert [r["decision"] for r in batch["results"]] == ["admit", "deny", "invalid"]
    replays = await call(
        "GET",
        "/v1/admin/replays?since=2020-01-01T00:00:00Z&until=2020-01-31T00:00:00%2B08:00",
        200,
        headers=ADMIN,
    )
    assert (replays["replays"], replays["by_place"]) == (0, [])
    await call("GET", "/v1/admin/replays", 200, headers=ADMIN)

    # 400 on every body-taking operation, and on the Idempotency-Key header.
    await call("POST", "/v1/verify", 400, json_body={"code": ""}, headers=terminal)
    await call(
        "POST",
        "/v1/verify",
        400,
        json_body={"code": "x", "scanned_at": "2026-13-45T00:00:00Z"},
        headers=terminal,
    )
    await call("POST", "/v1/verify/batch", 400, json_body={"scans": []}, headers=terminal)
    await call(
        "POST", "/v1/declarations", 400, json_body={**HEALTHY, "temperature_c": 80}, headers=green
    )
    await call(
        "POST",
        "/v1/declarations",
        400,
        json_body=HEALTHY,
        headers={**green, "Idempotency-Key": "é"},
    )
    await call(
        "POST",
        "/v1/admin/overrides",
        400,
        json_body={"user_id": "u", "color": "blue", "reason": "x"},
        headers=ADMIN,
    )
    await call(
        "POST",
        "/v1/admin/terminals",
        400,
        data=b"{",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    await call("GET", "/v1/admin/replays?since=yesterday", 400, headers=ADMIN)
    # 401 on every authenticated operation.
    for method, path in (
        ("POST", "/v1/verify"),
        ("POST", "/v1/verify/batch"),
        ("POST", "/v1/declarations"),
        ("GET", "/v1/pass"),
        ("GET", "/v1/pass.png"),
        ("GET", "/v1/pass.svg"),
        ("POST", "/v1/admin/overrides"),
        ("POST", "/v1/admin/terminals"),
        ("POST", f"/v1/admin/terminals/{created['id']}/revoke"),
        ("GET", "/v1/admin/replays"),
    ):
        await call(method, path, 401, headers={"Authorization": "Bearer nope"})
    # 403: a citizen token on admin operations.
    await call(
        "POST",
        "/v1/admin/overrides",
        403,
        json_body={"user_id": "u", "color": "red", "reason": "positive_test"},
        headers=green,
    )
    await call("POST", "/v1/admin/terminals", 403, json_body={"place": "x"}, headers=green)
    await call("POST", f"/v1/admin/terminals/{created['id']}/revoke", 403, headers=green)
    await call("GET", "/v1/admin/replays", 403, headers=green)
    # 413 and 415 on every body-taking operation.
    for path, headers, limit in (
        ("/v1/verify", terminal, 8192),
        ("/v1/verify/batch", terminal, 512 * 1024),
        ("/v1/declarations", green, 4096),
        ("/v1/admin/overrides", ADMIN, 4096),
        ("/v1/admin/terminals", ADMIN, 4096),
    ):
        too_big = b"{" + b" " * limit + b"}"
        big = await call(
            "POST", path, 413, data=too_big, headers={**headers, "Content-Type": "application/json"}
        )
        assert big["limit"] == limit
        await call("POST", path, 415, data=b"{}", headers={**headers, "Content-Type": "text/plain"})
    # Revocation: 204, then 403 for the revoked terminal, 404 for unknown terminals.
    await call("POST", f"/v1/admin/terminals/{created['id']}/revoke", 204, headers=ADMIN)
    await call("POST", "/v1/verify", 403, json_body={"code": green_pass["code"]}, headers=terminal)
    await call(
        "POST", "/v1/verify/batch", 403, json_body={"scans": [{"code": "x"}]}, headers=terminal
    )
    await call("POST", f"/v1/admin/terminals/{uuid.uuid4()}/revoke", 404, headers=ADMIN)
    await call("POST", "/v1/admin/terminals/not-a-uuid/revoke", 404, headers=ADMIN)

    # Issue 5: the audit log (the bootstrap admin key carries every role).
    page = await call("GET", "/v1/admin/audit?limit=5", 200, headers=ADMIN)
    assert page["entries"], page
    await call("GET", "/v1/admin/audit?limit=0", 400, headers=ADMIN)
    await call("GET", "/v1/admin/audit", 401, headers={"Authorization": "Bearer nope"})
    await call("GET", "/v1/admin/audit", 403, headers=green)

    # Issue 5: risk places (a window with no scans: the job finds no one; within the retention).
    risk_start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    risk = {
        "place": f"OpenAPI Mall {uuid.uuid4().hex[:8]}",
        "since": risk_start.astimezone(timezone(timedelta(hours=8))).isoformat(),
        "until": (risk_start + timedelta(hours=1)).isoformat(),
        "note": "contract test",
    }
    marked = await call("POST", "/v1/admin/risk-places", 202, json_body=risk, headers=ADMIN)
    again = await call("POST", "/v1/admin/risk-places", 200, json_body=risk, headers=ADMIN)
    assert again["id"] == marked["id"]
    await call("GET", marked["links"]["self"], 200, headers=ADMIN)
    await call("GET", f"/v1/admin/risk-places/{uuid.uuid4()}", 404, headers=ADMIN)
    await call(
        "POST", "/v1/admin/risk-places", 400, json_body={**risk, "color": "green"}, headers=ADMIN
    )
    await call("POST", "/v1/admin/risk-places", 401, json_body=risk, headers={})
    await call("POST", "/v1/admin/risk-places", 403, json_body=risk, headers=green)
    await call("GET", marked["links"]["self"], 401, headers={"Authorization": "Bearer nope"})
    await call("GET", marked["links"]["self"], 403, headers=green)
    too_big = b"{" + b" " * 4096 + b"}"
    await call(
        "POST",
        "/v1/admin/risk-places",
        413,
        data=too_big,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    await call(
        "POST",
        "/v1/admin/risk-places",
        415,
        data=b"{}",
        headers={**ADMIN, "Content-Type": "text/plain"},
    )

    # Issue 5: test results, uploaded as CSV (one good and one bad row).
    tested_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    lab_csv = f"user_id,result,tested_at\noa-lab-{uuid.uuid4().hex},negative,{tested_at}\n,x,y\n"
    csv_admin = {**ADMIN, "Content-Type": "text/csv; charset=utf-8"}
    lab = await call(
        "POST", "/v1/admin/test-results", 200, data=lab_csv.encode(), headers=csv_admin
    )
    assert (lab["applied"], lab["errors"]) == (1, [{"line": 3, "error": "user_id is empty"}])
    await call("POST", "/v1/admin/test-results", 400, data=b"no header\n", headers=csv_admin)
    await call(
        "POST",
        "/v1/admin/test-results",
        401,
        data=lab_csv.encode(),
        headers={"Authorization": "Bearer nope", "Content-Type": "text/csv"},
    )
    await call(
        "POST",
        "/v1/admin/test-results",
        403,
        data=lab_csv.encode(),
        headers={**green, "Content-Type": "text/csv"},
    )
    too_many_rows = b"user_id,result,tested_at\n" + b"u,x,y\n" * 100_001  # 600 kB
    big_csv = await call(
        "POST", "/v1/admin/test-results", 413, data=too_many_rows, headers=csv_admin
    )
    assert "at most 100000" in big_csv["detail"]
    await call(
        "POST",
        "/v1/admin/test-results",
        415,
        data=lab_csv.encode(),
        headers={**ADMIN, "Content-Type": "text/plain"},
    )

    # Issue 5: contact tracing, over the scans verified above (drained, so pages hold entries).
    await client.app[DRAIN].drain_all()
    moment = datetime.now(UTC)
    window = {
        "since": (moment - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "until": (moment + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    }
    at_gate = f"/v1/admin/trace/place?place=OpenAPI+Gate&since={window['since']}"
    at_gate += f"&until={window['until']}"
    traced = await call("GET", at_gate + "&limit=2", 200, headers=ADMIN)
    assert len(traced["entries"]) == 2
    assert traced["next_cursor"]
    await call("GET", f"{at_gate}&cursor={traced['next_cursor']}", 200, headers=ADMIN)
    await call("GET", at_gate + "&limit=0", 400, headers=ADMIN)
    await call("GET", at_gate, 401, headers={"Authorization": "Bearer nope"})
    await call("GET", at_gate, 403, headers=green)
    trace_body = {"user_id": green_user, **window}
    mine = await call("POST", "/v1/admin/trace/citizen", 200, json_body=trace_body, headers=ADMIN)
    assert mine["entries"]
    await call("POST", "/v1/admin/trace/citizen", 400, json_body={"user_id": "u"}, headers=ADMIN)
    await call("POST", "/v1/admin/trace/citizen", 401, json_body=trace_body, headers={})
    await call("POST", "/v1/admin/trace/citizen", 403, json_body=trace_body, headers=green)
    await call(
        "POST",
        "/v1/admin/trace/citizen",
        413,
        data=b"{" + b" " * 4096 + b"}",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    await call(
        "POST",
        "/v1/admin/trace/citizen",
        415,
        data=b"{}",
        headers={**ADMIN, "Content-Type": "text/plain"},
    )

    # Issue 11: the scan log's dead letters (role operator).
    await call("GET", "/v1/admin/dead-letters?limit=5", 200, headers=ADMIN)
    await call("GET", "/v1/admin/dead-letters?limit=0", 400, headers=ADMIN)
    await call("GET", "/v1/admin/dead-letters", 401, headers={"Authorization": "Bearer nope"})
    await call("GET", "/v1/admin/dead-letters", 403, headers=green)
    await call("POST", "/v1/admin/dead-letters/replay?limit=10", 200, headers=ADMIN)
    await call("POST", "/v1/admin/dead-letters/replay?limit=x", 400, headers=ADMIN)
    await call("POST", "/v1/admin/dead-letters/replay", 403, headers=green)

    # Issue 14: the trust store (role operator; GET /v1/trust public, with its 304).
    der, key, iss = dsc(), issuer_jwk(), issuer_url()
    # A kid in a path is base64url: standard base64 may hold a "/".
    url_kid = kid64(der).rstrip("=").replace("+", "-").replace("/", "_")
    await call("POST", "/v1/admin/trust/dcc", 200, json_body={"certificates": [b64(der)]},
               headers=ADMIN)  # fmt: skip
    await call("POST", "/v1/admin/trust/dcc", 400, json_body={"certificates": ["x"]},
               headers=ADMIN)  # fmt: skip
    await call("POST", "/v1/admin/trust/dcc", 403, json_body={"certificates": [b64(der)]},
               headers=green)  # fmt: skip
    shc_body = {"iss": iss, "jwks": {"keys": [key]}}
    await call("POST", "/v1/admin/trust/shc", 200, json_body=shc_body, headers=ADMIN)
    await call("POST", "/v1/admin/trust/shc", 400, json_body={**shc_body, "iss": "http://x"},
               headers=ADMIN)  # fmt: skip
    trust = await client.get("/v1/trust")
    await c.check(trust)
    assert trust.status == 200
    await call("GET", "/v1/trust", 304, headers={"If-None-Match": trust.headers["ETag"]})
    await call("DELETE", f"/v1/admin/trust/dcc/{url_kid}", 204, headers=ADMIN)
    await call("DELETE", f"/v1/admin/trust/dcc/{url_kid}", 404, headers=ADMIN)
    await call("DELETE", f"/v1/admin/trust/shc?iss={quote(iss, safe='')}", 204, headers=ADMIN)
    await call("DELETE", "/v1/admin/trust/shc", 400, headers=ADMIN)

    # Issue 14: places (role operator) and their policies (role health_officer).
    place = f"openapi-place-{uuid.uuid4().hex[:8]}"
    place_type = f"openapi-type-{uuid.uuid4().hex[:8]}"
    described = {"type": place_type, "name": "OpenAPI Place"}
    await call("PUT", f"/v1/admin/places/{place}", 201, json_body=described, headers=ADMIN)
    await call("PUT", f"/v1/admin/places/{place}", 200, json_body=described, headers=ADMIN)
    await call("PUT", f"/v1/admin/places/{place}", 400, json_body={"type": ""}, headers=ADMIN)
    await call("PUT", f"/v1/admin/places/{place}", 403, json_body=described, headers=green)
    shown = await call("GET", f"/v1/admin/places/{place}", 200, headers=ADMIN)
    assert shown["policy"]["source"] == "default"
    own_only = {"accepts": ["passcode", "card"], "rules": []}
    for policy_path in (
        f"/v1/admin/place-types/{place_type}/policy",
        f"/v1/admin/places/{place}/policy",
    ):
        await call("PUT", policy_path, 200, json_body=own_only, headers=ADMIN)
        await call("PUT", policy_path, 400, json_body={"accepts": ["x"]}, headers=ADMIN)
        await call("PUT", policy_path, 403, json_body=own_only, headers=green)
    await call(
        "PUT", "/v1/admin/places/openapi-nowhere/policy", 404, json_body=own_only, headers=ADMIN
    )

    # Issue 14: printed cards (role community_worker).
    worker = await role_headers(client, "community_worker")
    person = {"user_id": f"openapi-elder-{uuid.uuid4().hex[:8]}", "name": "王小明", "days": 30}
    card = await call("POST", "/v1/admin/cards", 201, json_body=person, headers=worker)
    await call("POST", "/v1/admin/cards", 400, json_body={"name": "x"}, headers=worker)
    await call("POST", "/v1/admin/cards", 403, json_body=person, headers=green)
    serial = card["serial"]
    await call("GET", f"/v1/admin/cards/{serial}/sheet.svg", 200, headers=worker)
    await call("GET", f"/v1/admin/cards/{serial}/card.png", 200, headers=worker)
    declared = f"/v1/admin/cards/{serial}/declarations"
    await call("POST", declared, 201, json_body=HEALTHY, headers=worker)
    await call("POST", declared, 400, json_body={"temperature_c": "hot"}, headers=worker)
    revoke = f"/v1/admin/cards/{serial}/revoke"
    await call("POST", revoke, 200, json_body={"reason": "lost"}, headers=worker)
    await call("POST", revoke, 400, json_body={"reason": "eaten"}, headers=worker)

    # Issue 15: venue codes (场所码): posters (role operator) and citizens' check-ins.
    poster_path = f"/v1/admin/places/{place}/poster"
    old_poster = await call("POST", poster_path, 201, headers=ADMIN)
    poster = await call("POST", poster_path, 201, headers=ADMIN)
    await call("POST", poster_path, 403, headers=green)
    await call("POST", "/v1/admin/places/openapi-nowhere/poster", 404, headers=ADMIN)
    await call("GET", poster["png_url"], 200, headers=ADMIN)
    await call("GET", poster["svg_url"], 200, headers=ADMIN)
    await call("GET", "/v1/admin/places/openapi-nowhere/poster.svg", 404, headers=ADMIN)
    checkin = {"place_code": poster["code"], "checkin_id": str(uuid.uuid4())}
    await call("POST", "/v1/checkins", 200, json_body=checkin, headers=green)
    await call("POST", "/v1/checkins", 200, json_body=checkin, headers=green)  # a retry
    await call("POST", "/v1/checkins", 400, json_body={"place_code": "PP1:XX"}, headers=green)
    await call(
        "POST", "/v1/checkins", 410, json_body={"place_code": old_poster["code"]}, headers=green
    )
    await call("POST", "/v1/checkins", 401, json_body=checkin, headers={})
    undeclared = auth(make_token(user_id=f"oa-nobody-{uuid.uuid4().hex}"))
    await call("POST", "/v1/checkins", 404, json_body=checkin, headers=undeclared)

    # Issue 15: sign-in. GET /v1/web-config, and dev mode's identity provider's code flow.
    config = await call("GET", "/v1/web-config", 200)
    await call("GET", "/dev-idp/.well-known/openid-configuration", 200)
    await call("GET", "/dev-idp/jwks", 200)
    verifier = "openapi-verifier-" + "v" * 40
    login = {
        "response_type": "code",
        "client_id": config["client_id"],
        "redirect_uri": config["redirect_uri"],
        "scope": "openid profile",
        "state": "openapi-state",
        "nonce": "openapi-nonce",
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
    }
    page = await client.get("/dev-idp/authorize", params=login)
    await c.check(page)
    assert page.status == 200
    await call("GET", "/dev-idp/authorize?client_id=x", 400)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    posted = await client.post(
        "/dev-idp/authorize",
        data={**login, "user_id": "openapi-idp-user", "name": "OpenAPI"},
        allow_redirects=False,
    )
    await c.check(posted)
    assert posted.status == 303
    bad_user = {**login, "user_id": "x\ny", "name": "n"}
    refused = await client.post("/dev-idp/authorize", data=bad_user, allow_redirects=False)
    await c.check(refused)
    assert refused.status == 400  # the form again, with the reason
    evil = urlencode({**login, "redirect_uri": "https://evil.example/"}).encode()
    await call("POST", "/dev-idp/authorize", 400, data=evil, headers=form)
    await call("POST", "/dev-idp/authorize", 415, json_body={"a": 1})
    await call("POST", "/dev-idp/authorize", 413, data=b"a=" + b"x" * 9000, headers=form)
    code = parse_qs(urlsplit(posted.headers["Location"]).query)["code"][0]
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": config["redirect_uri"],
        "client_id": config["client_id"],
        "code_verifier": verifier,
    }
    tokens = await call("POST", "/dev-idp/token", 200, data=urlencode(exchange).encode(),
                        headers=form)  # fmt: skip
    await call("GET", "/v1/pass", 404, headers=auth(tokens["id_token"]))
    await call("POST", "/dev-idp/token", 400, data=urlencode(exchange).encode(), headers=form)
    await call("POST", "/dev-idp/token", 415, json_body={"a": 1})
    await call("POST", "/dev-idp/token", 413, data=b"a=" + b"x" * 9000, headers=form)

    # Issue 15: the pages (strict CSP and frame headers on each), their files, the npm ones.
    index = await call("GET", "/app/", 200)
    etag = (await client.get("/app/")).headers["ETag"]
    await call("GET", "/app/", 304, headers={"If-None-Match": etag})
    for path in ("/app/main.js", "/app/app.css", "/app/icon.svg", "/app/index.html"):
        await call("GET", path, 200)
    await call("GET", "/app/nothing.js", 404)
    await call("GET", "/scan/", 200)
    await call("GET", "/scan/scan.js", 200)
    await call("GET", "/common/i18n.js", 200)
    await call("GET", "/common/nothing.js", 404)
    catalogue = await call("GET", "/i18n/en.json", 200)
    assert catalogue["app.name"]
    await call("GET", "/i18n/fr.json", 404)
    await call("GET", "/docs", 200)
    await call("GET", "/docs/init.js", 200)
    await call("GET", "/vendor/swagger-ui.css", 200)
    await call("GET", "/vendor/uqr.mjs", 200)
    await call("GET", "/vendor/nothing.js", 404)
    assert b"main.js" in index

    # Issue 16: a citizen's copy of their data, its deletion, and the in-person erasure.
    erased_user = f"oa-erase-{uuid.uuid4().hex}"
    erased = auth(make_token(user_id=erased_user))
    await call("POST", "/v1/declarations", 201, json_body=HEALTHY, headers=erased)
    await call("GET", "/v1/me/data", 200, headers=erased)
    await call("GET", "/v1/me/data", 401, headers={})
    await call("DELETE", "/v1/me", 200, headers=erased)
    await call("DELETE", "/v1/me", 401, headers={})
    await call("GET", "/v1/me/data", 200, headers=erased)  # nothing held: empty lists
    in_person = {"user_id": green_user}
    await call("POST", "/v1/admin/erasures", 200, json_body=in_person, headers=ADMIN)
    await call("POST", "/v1/admin/erasures", 400, json_body={"user_id": ""}, headers=ADMIN)
    await call("POST", "/v1/admin/erasures", 401, json_body=in_person, headers={})

    exercised = {(m, t) for m, t, status in c.seen if status < 400}
    documented = {
        (m, t) for t, item in c.document["paths"].items() for m in item if m != "parameters"
    }
    assert exercised == documented
    errors = {status for _, _, status in c.seen if status >= 400}
    assert errors >= {400, 401, 403, 404, 409, 413, 415}


async def test_rate_limited_responses_match_the_document(
    aiohttp_client: Any, settings: Settings
) -> None:
    """A terminal over its rate gets 429 on verify and batch, declared with a Problem body and a
    Retry-After header."""
    slow = await aiohttp_client(create_app(replace(settings, terminal_rate=0.01, terminal_burst=1)))
    contract = Contract(openapi_document())
    created = await slow.post("/v1/admin/terminals", json={"place": "Slow Gate"}, headers=ADMIN)
    assert created.status == 201
    terminal = auth((await created.json())["key"])
    ok = await slow.post("/v1/verify", json={"code": "PC1:X"}, headers=terminal)
    await contract.check(ok)
    assert ok.status == 200
    for path, body in (
        ("/v1/verify", {"code": "PC1:X"}),
        ("/v1/verify/batch", {"scans": [{"code": "PC1:X"}] * 3}),
    ):
        limited = await slow.post(path, json=body, headers=terminal)
        await contract.check(limited)
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1


async def test_an_undeclared_status_fails_the_contract(client: TestClient[Any, Any]) -> None:
    """Control: the checker really fails on a status the operation does not declare (GET /healthz
    answering 200, checked against a copy of the document that declares only 503 for it)."""
    document = copy.deepcopy(openapi_document())
    document["paths"]["/healthz"]["get"]["responses"] = {"503": {"description": "x"}}
    contract = Contract(document)
    response = await client.get("/healthz")
    with pytest.raises(AssertionError, match="does not declare"):
        await contract.check(response)
