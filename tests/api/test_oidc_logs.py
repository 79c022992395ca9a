"""A real ``passcode serve`` in dev mode trusts its own identity provider through discovery,
and its logs, at DEBUG with the access log on, never carry what sign-in handles: ID tokens,
authorization codes, PKCE verifiers, the signed-in user's id or name."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from passcode.testing import HEALTHY
from tests.live_server import LiveServer, live_settings


@pytest.fixture
async def live(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[LiveServer]:
    settings = live_settings(database_url, redis_url, redis_prefix, tmp_path, tag="oidclogs")
    server = LiveServer(
        settings,
        tmp_path / "server.log",
        extra_env={"PASSCODE_LOG_LEVEL": "DEBUG", "PASSCODE_ACCESS_LOG": "1"},
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_dev_serve_signs_in_through_discovery_and_logs_no_sign_in_secret(
    live: LiveServer,
) -> None:
    """The served login page, a code, the exchange, the token used to declare, then a wrong
    verifier and a reused code: the server's log shows it loaded its provider's document and
    key over HTTP (the discovery path), an access line per sign-in request, and none of the
    token (nor its signature), the codes, the verifier, the user id or any part of the name."""
    base = live.url
    user, name = f"raw-oidc-user-{uuid.uuid4().hex}", "Bartholomew Xavier Quill"
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    async with aiohttp.ClientSession() as http:
        config = await (await http.get(f"{base}/v1/web-config")).json()
        request = {
            "response_type": "code",
            "client_id": config["client_id"],
            "redirect_uri": config["redirect_uri"],
            "scope": "openid profile",
            "state": "log-state",
            "nonce": "log-nonce",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        page = await http.get(config["authorization_endpoint"], params=request)
        assert page.status == 200
        codes = []
        for _ in range(2):
            posted = await http.post(
                config["authorization_endpoint"],
                data={**request, "user_id": user, "name": name},
                allow_redirects=False,
            )
            assert posted.status == 303
            codes.append(parse_qs(urlsplit(posted.headers["Location"]).query)["code"][0])
        exchange = {
            "grant_type": "authorization_code",
            "redirect_uri": config["redirect_uri"],
            "client_id": config["client_id"],
        }
        done = await http.post(
            config["token_endpoint"],
            data={**exchange, "code": codes[0], "code_verifier": verifier},
        )
        token = (await done.json())["id_token"]
        reused = await http.post(
            config["token_endpoint"],
            data={**exchange, "code": codes[0], "code_verifier": verifier},
        )
        wrong = await http.post(
            config["token_endpoint"],
            data={**exchange, "code": codes[1], "code_verifier": secrets.token_urlsafe(48)},
        )
        assert (reused.status, wrong.status) == (400, 400)
        declared = await http.post(
            f"{base}/v1/declarations", json=HEALTHY, headers={"Authorization": f"Bearer {token}"}
        )
        assert declared.status == 201
    await asyncio.to_thread(live.stop)
    log = live.log_path.read_text()
    assert "log_level='DEBUG'" in log
    assert "identity provider passcode-dev-idp: 1 keys" in log
    for route in ("/dev-idp/authorize", "/dev-idp/token", "/v1/web-config"):
        assert route in log
    secrets_used = [token, token.rsplit(".", 1)[1], *codes, verifier, user, *name.split()]
    leaked = [s for s in secrets_used if s in log]
    assert not leaked, leaked
    assert not re.search(r"eyJ[\w-]{20,}", log)  # nothing shaped like a JWT either
