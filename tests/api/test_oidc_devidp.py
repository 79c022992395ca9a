"""Dev mode's identity provider (/dev-idp/): the code flow with PKCE as a real provider runs it,
its refusals, its absence outside dev mode, GET /v1/web-config, and dev mode's service trusting
it through discovery like any provider."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import socket
import time
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import SIGN_IN
from passcode.testing import HEALTHY, auth
from tests.helpers import FakeClock

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _request(client: TestClient[Any, Any], challenge: str, **extra: str) -> dict[str, str]:
    origin = str(client.make_url("/")).rstrip("/")
    return {
        "response_type": "code",
        "client_id": "passcode",
        "redirect_uri": f"{origin}/app/",
        "scope": "openid profile",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def _code(client: TestClient[Any, Any], params: dict[str, str], user: str) -> str:
    """Show the login page, post it as the user, and return the code of the redirect."""
    page = await client.get("/dev-idp/authorize", params=params)
    assert page.status == 200, await page.text()
    html = await page.text()
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
    assert fields["code_challenge"] == params["code_challenge"]
    posted = await client.post(
        "/dev-idp/authorize",
        data={**fields, "user_id": user, "name": "张小三"},
        allow_redirects=False,
    )
    assert posted.status == 303, await posted.text()
    location = urlsplit(posted.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    query = parse_qs(location.query)
    assert query["state"] == [params["state"]]
    assert query["iss"] == ["passcode-dev-idp"]
    return query["code"][0]


async def _exchange(
    client: TestClient[Any, Any], code: str, verifier: str, redirect_uri: str
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/dev-idp/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": "passcode",
            "code_verifier": verifier,
        },
    )
    assert response.headers["Cache-Control"] == "no-store"
    return response.status, await response.json()


async def test_code_flow_with_pkce_gives_an_id_token_the_service_accepts(
    client: TestClient[Any, Any],
) -> None:
    """Discovery names the endpoints; the login page (no script, a strict CSP) posts to a 303
    carrying code and state; the code with its verifier gives an ID token with iss, aud, sub,
    name, iat, exp and the request's nonce, which the service accepts as that citizen."""
    document = await (await client.get("/dev-idp/.well-known/openid-configuration")).json()
    origin = str(client.make_url("/")).rstrip("/")
    assert document["issuer"] == "passcode-dev-idp"
    assert document["authorization_endpoint"] == f"{origin}/dev-idp/authorize"
    assert document["token_endpoint"] == f"{origin}/dev-idp/token"
    assert document["code_challenge_methods_supported"] == ["S256"]
    verifier, challenge = _pkce()
    params = _request(client, challenge)
    page = await client.get("/dev-idp/authorize", params=params)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert f"form-action 'self' {origin}" in csp
    assert "<script" not in await page.text()
    assert "style=" not in await page.text()
    user = f"idp-{uuid.uuid4().hex}"
    code = await _code(client, params, user)
    status, tokens = await _exchange(client, code, verifier, params["redirect_uri"])
    assert status == 200, tokens
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["iss"] == "passcode-dev-idp"
    assert claims["aud"] == "passcode"
    assert (claims["sub"], claims["name"], claims["nonce"]) == (user, "张小三", params["nonce"])
    assert claims["exp"] > claims["iat"]
    keys = await (await client.get("/dev-idp/jwks")).json()
    assert [k["kid"] for k in keys["keys"]] == [
        jwt.get_unverified_header(tokens["id_token"])["kid"]
    ]
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(tokens["id_token"]))
    assert declared.status == 201, await declared.text()
    shown = await (await client.get("/v1/pass", headers=auth(tokens["id_token"]))).json()
    assert shown["holder"]["name"] == "张*三"


async def test_a_wrong_pkce_verifier_is_refused_and_spends_the_code(
    client: TestClient[Any, Any],
) -> None:
    """Another verifier than the challenge's is invalid_grant; the right one afterwards is too
    (the failed try spent the code: a guessed verifier gets one try)."""
    verifier, challenge = _pkce()
    params = _request(client, challenge)
    code = await _code(client, params, "pkce-user")
    status, body = await _exchange(client, code, _pkce()[0], params["redirect_uri"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "verifier" in body["error_description"]
    status, body = await _exchange(client, code, verifier, params["redirect_uri"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_code_is_single_use(client: TestClient[Any, Any]) -> None:
    """The second exchange of a code that worked is invalid_grant."""
    verifier, challenge = _pkce()
    params = _request(client, challenge)
    code = await _code(client, params, "once-user")
    first, _ = await _exchange(client, code, verifier, params["redirect_uri"])
    second, body = await _exchange(client, code, verifier, params["redirect_uri"])
    assert (first, second, body["error"]) == (200, 400, "invalid_grant")


async def test_a_code_lives_only_a_minute(aiohttp_client: Any, settings: Settings) -> None:
    """A code exchanged after its 60 s is invalid_grant (the service's injected clock)."""
    clock = FakeClock(float(int(time.time())))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(replace(settings, clock=clock)))
    verifier, challenge = _pkce()
    params = _request(client, challenge)
    code = await _code(client, params, "slow-user")
    clock.at += 61
    status, body = await _exchange(client, code, verifier, params["redirect_uri"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_redirect_uri_mismatch_is_refused(client: TestClient[Any, Any]) -> None:
    """An unregistered redirect URI gets a 400 problem, never a redirect; a code exchanged
    with another redirect URI than its authorization's is invalid_grant."""
    verifier, challenge = _pkce()
    for bad in ("https://evil.example/app/", f"{_request(client, challenge)['redirect_uri']}x"):
        page = await client.get(
            "/dev-idp/authorize", params=_request(client, challenge, redirect_uri=bad)
        )
        assert page.status == 400
        assert "Location" not in page.headers
        assert (await page.json())["detail"].startswith("invalid_request:")
        posted = await client.post(
            "/dev-idp/authorize",
            data={**_request(client, challenge, redirect_uri=bad), "user_id": "u", "name": "n"},
            allow_redirects=False,
        )
        assert posted.status == 400
        assert "Location" not in posted.headers
    params = _request(client, challenge)
    code = await _code(client, params, "redirect-user")
    origin = str(client.make_url("/")).rstrip("/")
    status, body = await _exchange(client, code, verifier, f"{origin}/scan/")
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_bad_authorization_requests_are_refused(client: TestClient[Any, Any]) -> None:
    """No PKCE, plain PKCE, another client, a response type other than code, a scope without
    openid, no nonce: each a 400 naming the OAuth error."""
    _, challenge = _pkce()
    cases = {
        "no challenge": ({"code_challenge": ""}, "invalid_request"),
        "plain": ({"code_challenge_method": "plain"}, "invalid_request"),
        "short challenge": ({"code_challenge": "abc"}, "invalid_request"),
        "client": ({"client_id": "someone-else"}, "unauthorized_client"),
        "implicit": ({"response_type": "token"}, "unsupported_response_type"),
        "scope": ({"scope": "profile"}, "invalid_scope"),
        "nonce": ({"nonce": ""}, "invalid_request"),
    }
    for name, (extra, error) in cases.items():
        page = await client.get("/dev-idp/authorize", params=_request(client, challenge, **extra))
        assert page.status == 400, name
        assert (await page.json())["detail"].startswith(f"{error}:"), name


async def test_the_login_form_refuses_a_bad_user_id_on_the_page(
    client: TestClient[Any, Any],
) -> None:
    """A user id the service would refuse (control characters) shows the form again with the
    reason as an alert, and no code."""
    _, challenge = _pkce()
    posted = await client.post(
        "/dev-idp/authorize",
        data={**_request(client, challenge), "user_id": "bad\nuser", "name": "n"},
        allow_redirects=False,
    )
    assert posted.status == 400
    assert "Location" not in posted.headers
    assert 'role="alert"' in await posted.text()


async def test_token_endpoint_refuses_bad_forms(client: TestClient[Any, Any]) -> None:
    """JSON instead of a form is 415; a parameter twice, another grant type, an unknown code
    are OAuth errors; a form above 8 KiB is 413."""
    assert (await client.post("/dev-idp/token", json={"code": "x"})).status == 415
    twice = await client.post("/dev-idp/token", data="code=a&code=b", headers=FORM)
    assert (twice.status, (await twice.json())["error"]) == (400, "invalid_request")
    grant = await client.post("/dev-idp/token", data={"grant_type": "password"})
    assert (await grant.json())["error"] == "unsupported_grant_type"
    unknown = await client.post(
        "/dev-idp/token", data={"grant_type": "authorization_code", "code": "nope"}
    )
    assert (await unknown.json())["error"] == "invalid_grant"
    big = await client.post("/dev-idp/token", data="a=" + "x" * 9000, headers=FORM)
    assert big.status == 413


async def test_outside_dev_mode_every_dev_idp_path_is_404(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Without dev mode the provider does not exist: each of its paths answers 404, and
    web-config says sign-in is not configured (503)."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(replace(settings, dev_mode=False))
    )
    for method, path in (
        ("GET", "/dev-idp/.well-known/openid-configuration"),
        ("GET", "/dev-idp/authorize"),
        ("POST", "/dev-idp/authorize"),
        ("POST", "/dev-idp/token"),
        ("GET", "/dev-idp/jwks"),
    ):
        response = await client.request(method, path, data={"grant_type": "authorization_code"})
        assert response.status == 404, (method, path)
    assert (await client.get("/v1/web-config")).status == 503


async def test_web_config_in_dev_mode_names_the_dev_provider(
    client: TestClient[Any, Any],
) -> None:
    """What the pages read: dev mode's provider on this origin, client id = the audience, the
    citizen page as redirect URI; nothing else."""
    response = await client.get("/v1/web-config")
    origin = str(client.make_url("/")).rstrip("/")
    assert await response.json() == {
        "issuer": "passcode-dev-idp",
        "authorization_endpoint": f"{origin}/dev-idp/authorize",
        "token_endpoint": f"{origin}/dev-idp/token",
        "client_id": "passcode",
        "redirect_uri": f"{origin}/app/",
    }


async def test_configured_redirect_uris_replace_the_default(
    aiohttp_client: Any, settings: Settings
) -> None:
    """PASSCODE_IDP_REDIRECT_URIS: web-config names the first; the provider accepts those
    listed and refuses the origin's /app/ it accepted by default."""
    listed = ("https://pass.example/app/", "https://pass.example/scan/")
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(replace(settings, idp_redirect_uris=listed))
    )
    assert (await (await client.get("/v1/web-config")).json())["redirect_uri"] == listed[0]
    _, challenge = _pkce()
    ok = await client.get(
        "/dev-idp/authorize", params=_request(client, challenge, redirect_uri=listed[1])
    )
    assert ok.status == 200
    assert "form-action 'self' https://pass.example" in ok.headers["Content-Security-Policy"]
    refused = await client.get("/dev-idp/authorize", params=_request(client, challenge))
    assert refused.status == 400


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_dev_mode_trusts_its_provider_through_discovery(settings: Settings) -> None:
    """With PASSCODE_IDP_DISCOVERY_URL at its own /dev-idp/ (what `passcode serve` sets in dev
    mode), the service loads the document and keys over HTTP once it listens, and its
    web-config comes from the fetched document."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/dev-idp/.well-known/openid-configuration"
    app = create_app(replace(settings, idp_discovery_url=url))
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        provider = app[SIGN_IN].provider
        assert provider is not None
        await asyncio.wait_for(provider.loaded.wait(), timeout=10)
        assert provider.metadata is not None
        assert provider.metadata.token_endpoint == f"http://127.0.0.1:{port}/dev-idp/token"
        assert set(provider.fetched) == {"dev"}
        async with ClientSession() as session:
            config = await session.get(f"http://127.0.0.1:{port}/v1/web-config")
            body = json.loads(await config.text())
        assert body["authorization_endpoint"] == provider.metadata.authorization_endpoint
    finally:
        await server.close()
