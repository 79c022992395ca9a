"""Sign-in against a certified OpenID provider the project did not write: the npm package
``oidc-provider`` (tests/oidc/provider.mjs) on loopback, installed by this module's set-up.

The real authorization code flow with PKCE is run with aiohttp through the provider's own
login and consent pages; the service, its discovery pointed at the provider, accepts the ID
tokens (RS256, ES256, EdDSA) and refuses tampered, expired and wrong-audience ones; a rotated
provider key is fetched once however many requests carry it.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.identity import s256_challenge
from passcode.domain.masking import mask_name
from passcode.keys import SIGN_IN
from passcode.testing import HEALTHY, auth
from tests.helpers import FakeClock

HARNESS = Path(__file__).resolve().parents[1] / "oidc"
REDIRECT_URI = "http://127.0.0.1:9/app/"  # never visited: the flow stops at its Location
START_DEADLINE = 30.0
NODE = shutil.which("node") or "node"


@pytest.fixture(scope="session")
def harness() -> Path:
    """tests/oidc with its npm packages: ``npm ci`` (package-lock.json) when node_modules is
    missing; skipped with the reason when Node.js or npm is not installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed to run oidc-provider (tests/oidc)")
    if not (HARNESS / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(  # noqa: S603  # npm, resolved above, on the committed lock file
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HARNESS)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return HARNESS


class ProviderProcess:
    """One ``node provider.mjs`` process; its stdout's JSON events, collected by a thread."""

    def __init__(self, harness: Path, port: int) -> None:
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self.process = subprocess.Popen(  # noqa: S603  # our own script
            [NODE, str(harness / "provider.mjs"), str(port), REDIRECT_URI],
            cwd=harness,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # oidc-provider's warnings about its dev-only setup
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(START_DEADLINE):
            self.stop()
            pytest.fail("oidc-provider did not start within 30 s")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                event = json.loads(line)
                self.events.append(event)
                if event["event"] == "ready":
                    self.kids = event["kids"]
                    self._ready.set()

    async def jwks_requests(self) -> int:
        """The JWK Set requests so far, once the events printed for them had time to arrive
        (node writes them to the pipe a moment after answering)."""
        await asyncio.sleep(0.5)
        return sum(1 for e in self.events if e["event"] == "jwks")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def idp(harness: Path) -> Iterator[ProviderProcess]:
    process = ProviderProcess(harness, _free_port())
    yield process
    process.stop()


async def sign_in(issuer: str, client_id: str, user: str) -> tuple[str, str]:
    """The authorization code flow with PKCE through the provider's login and consent pages,
    as a browser would follow it; the ID token and the nonce sent."""
    verifier = secrets.token_urlsafe(48)
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = f"{issuer}/auth?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP-address host
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        for _ in range(12):
            response = await http.get(url, allow_redirects=False)
            if response.status in {302, 303}:
                url = urljoin(url, response.headers["Location"])
            else:
                page = await response.text()
                assert response.status == 200, page[:500]
                action = re.search(r'<form[^>]*action="([^"]+)"', page)
                prompt = re.search(r'name="prompt" value="([^"]+)"', page)
                assert action is not None, page[:500]
                assert prompt is not None, page[:500]
                form = {"prompt": prompt.group(1)}
                if form["prompt"] == "login":
                    form |= {"login": user, "password": "any"}
                posted = await http.post(
                    urljoin(url, html.unescape(action.group(1))), data=form, allow_redirects=False
                )
                assert posted.status in {302, 303}, (await posted.text())[:500]
                url = urljoin(url, posted.headers["Location"])
            if url.startswith(REDIRECT_URI):
                break
        answer = parse_qs(urlsplit(url).query)
        assert answer.get("state") == [state], url
        exchanged = await http.post(
            f"{issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": REDIRECT_URI,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        body = await exchanged.json()
        assert exchanged.status == 200, body
    return str(body["id_token"]), nonce


async def _service(
    aiohttp_client: Any, settings: Settings, issuer: str, client_id: str, clock: FakeClock
) -> TestClient[Any, Any]:
    """The service trusting ``issuer`` through its discovery document, once it loaded it."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(
            replace(
                settings,
                idp_discovery_url=f"{issuer}/.well-known/openid-configuration",
                idp_issuer=issuer,
                idp_audience=client_id,
                clock=clock,
            )
        )
    )
    provider = client.app[SIGN_IN].provider
    assert provider is not None
    await asyncio.wait_for(provider.loaded.wait(), timeout=10)
    return client


@pytest.mark.parametrize(
    ("client_id", "alg"),
    [("passcode-rs256", "RS256"), ("passcode-es256", "ES256"), ("passcode-eddsa", "EdDSA")],
)
async def test_the_certified_providers_id_tokens_are_accepted(
    aiohttp_client: Any, settings: Settings, idp: ProviderProcess, client_id: str, alg: str
) -> None:
    """An ID token from oidc-provider's real code flow (alg as the client is registered, the
    nonce sent) lets its holder declare and see their pass under the token's name."""
    clock = FakeClock(time.time())
    client = await _service(aiohttp_client, settings, idp.issuer, client_id, clock)
    user = f"op-{uuid.uuid4().hex[:12]}"
    token, nonce = await sign_in(idp.issuer, client_id, user)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == alg
    assert header["kid"] in idp.kids
    assert (claims["sub"], claims["aud"], claims["nonce"]) == (user, client_id, nonce)
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    shown = await client.get("/v1/pass", headers=auth(token))
    assert shown.status == 200
    assert (await shown.json())["holder"]["name"] == mask_name(f"Tester {user}")


async def test_tampered_expired_and_wrong_audience_tokens_are_refused(
    aiohttp_client: Any, settings: Settings, idp: ProviderProcess
) -> None:
    """The provider's token with one claim changed, the same token once the service's clock
    passes its exp (and the leeway), and a token the provider issued to another client: 401."""
    clock = FakeClock(time.time())
    client = await _service(aiohttp_client, settings, idp.issuer, "passcode-rs256", clock)
    token, _ = await sign_in(idp.issuer, "passcode-rs256", f"op-{uuid.uuid4().hex[:12]}")
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "someone"}).encode())
    tampered = f"{head}.{forged.decode()}.{signature}"
    other, _ = await sign_in(idp.issuer, "someone-else", f"op-{uuid.uuid4().hex[:12]}")

    async def status(bearer: str) -> int:
        response = await client.get("/v1/pass", headers=auth(bearer))
        return response.status

    assert await status(token) == 404  # signed in; no declaration yet
    assert await status(tampered) == 401
    assert await status(other) == 401
    clock.at = claims["exp"] + settings.clock_skew + 1
    assert await status(token) == 401


async def test_a_rotated_provider_key_is_fetched_once(
    aiohttp_client: Any, settings: Settings, harness: Path
) -> None:
    """The provider restarts with new keys (new kids) on the same issuer: ten requests at once
    with a token of the new key are all served after one fetch of its JWK Set."""
    port = _free_port()
    first = ProviderProcess(harness, port)
    try:
        clock = FakeClock(time.time())
        client = await _service(aiohttp_client, settings, first.issuer, "passcode-rs256", clock)
        assert await first.jwks_requests() == 1
        old_kids = set(first.kids)
    finally:
        first.stop()
    rotated = ProviderProcess(harness, port)
    try:
        assert not old_kids & set(rotated.kids)
        token, _ = await sign_in(rotated.issuer, "passcode-rs256", f"op-{uuid.uuid4().hex[:12]}")
        answers = await asyncio.gather(
            *(client.get("/v1/pass", headers=auth(token)) for _ in range(10))
        )
        assert [a.status for a in answers] == [404] * 10  # signed in, not declared yet
        assert await rotated.jwks_requests() == 1
    finally:
        rotated.stop()
