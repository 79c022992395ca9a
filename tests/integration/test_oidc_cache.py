"""The identity provider's discovery document and keys (passcode.service.oidc) against a local
aiohttp provider: an unknown kid costs one fetch however many tokens wait on it, a failed
fetch keeps the old keys, the deadline holds, and the unknown-kid fetches are bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from passcode.domain.identity import IdentityError, IdTokenVerifier, UnknownKeyError, idp_key
from passcode.service.oidc import ProviderKeys, SignIn
from tests.helpers import FakeClock
from tests.identity_tokens import AUDIENCE, ISSUER, Provider, make_providers


@dataclass
class FakeProvider:
    """A provider whose JWK Set the test changes, counting requests; it can fail or stall."""

    jwks: list[dict[str, Any]]
    issuer: str = ISSUER
    hits: dict[str, int] = field(default_factory=lambda: {"discovery": 0, "jwks": 0})
    fail: bool = False
    stall: float = 0.0
    base: str = ""

    async def discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.base}/jwks",
                "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": f"{self.base}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.fail:
            return web.Response(status=503)
        await asyncio.sleep(0.05)  # long enough for concurrent tokens to pile up
        return web.json_response({"keys": self.jwks})


@pytest.fixture
def keys() -> dict[str, Provider]:
    return make_providers()


@pytest.fixture
async def idp(keys: dict[str, Provider]) -> AsyncIterator[tuple[FakeProvider, str]]:
    fake = FakeProvider(jwks=[keys["rsa"].jwk])
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", fake.discovery)
    app.router.add_get("/jwks", fake.keys)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")
    try:
        yield fake, f"{fake.base}/.well-known/openid-configuration"
    finally:
        await server.close()


def _token(provider: Provider, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "cache-user", "iat": now, "exp": now + 600}
    return jwt.encode(
        {**body, **claims}, provider.private, provider.alg, headers={"kid": provider.kid}
    )


async def _sign_in(
    url: str, *, timeout: float = 2.0, min_interval: float = 30.0, monotonic: Any = time.monotonic
) -> tuple[SignIn, ProviderKeys]:
    verifier = IdTokenVerifier({}, issuer=ISSUER, audience=AUDIENCE, leeway=30)
    provider = ProviderKeys(
        url,
        issuer=ISSUER,
        static={},
        on_keys=verifier.replace_keys,
        timeout=timeout,
        min_interval=min_interval,
        monotonic=monotonic,
    )
    await provider.open()
    return SignIn(verifier, provider, clock=FakeClock(time.time())), provider


async def test_an_unknown_kid_costs_one_fetch_for_every_token_waiting_on_it(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """After the first load, the provider rotates to a P-256 key: 20 concurrent tokens of the
    new kid are all accepted after a single JWKS fetch; tokens of the old key never wait."""
    fake, url = idp
    sign_in, provider = await _sign_in(url)
    try:
        assert await provider.refresh()
        assert fake.hits == {"discovery": 1, "jwks": 1}
        old = await sign_in.citizen(_token(keys["rsa"]))
        assert old.user_id == "cache-user"
        fake.jwks = [keys["rsa"].jwk, keys["p256"].jwk]
        tokens = [_token(keys["p256"], sub=f"user-{n}") for n in range(20)]
        citizens = await asyncio.gather(*(sign_in.citizen(t) for t in tokens))
        assert [c.user_id for c in citizens] == [f"user-{n}" for n in range(20)]
        assert fake.hits == {"discovery": 2, "jwks": 2}
        before = dict(fake.hits)
        fake.stall = 5.0  # a provider stuck now would hold up anything that waited on it
        started = time.monotonic()
        assert (await sign_in.citizen(_token(keys["rsa"], sub="known"))).user_id == "known"
        assert time.monotonic() - started < 0.1
        assert fake.hits == before
    finally:
        await provider.close()


async def test_unknown_kid_fetches_are_bounded_per_interval(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """Tokens naming made-up kids: the first causes a fetch, the next ones within the interval
    none (refused at once); once the interval has passed, one fetch again."""
    fake, url = idp
    clock = FakeClock(1000.0)
    sign_in, provider = await _sign_in(url, min_interval=30.0, monotonic=clock.now)
    try:
        assert await provider.refresh()
        forged = keys["ed"]
        for n in range(5):
            stranger = Provider(f"made-up-{n}", forged.private, forged.alg, forged.jwk)
            with pytest.raises(UnknownKeyError):
                await sign_in.citizen(_token(stranger))
        assert fake.hits["jwks"] == 2
        clock.at += 31
        with pytest.raises(UnknownKeyError):
            await sign_in.citizen(_token(Provider("made-up-late", forged.private, "EdDSA", {})))
        assert fake.hits["jwks"] == 3
    finally:
        await provider.close()


async def test_a_failed_fetch_keeps_the_old_keys(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """The provider answers 503, then a document that is not a JWK Set: each refresh reports
    failure, and the keys held before still verify their tokens."""
    fake, url = idp
    sign_in, provider = await _sign_in(url, min_interval=0.0)
    try:
        assert await provider.refresh()
        fake.fail = True
        assert not await provider.refresh()
        assert set(provider.keys) == {"rsa"}
        fake.fail = False
        fake.jwks = [{"kty": "oct", "k": "c2VjcmV0"}]  # a symmetric key: nothing usable
        assert not await provider.refresh()
        assert set(provider.keys) == {"rsa"}
        assert (await sign_in.citizen(_token(keys["rsa"]))).user_id == "cache-user"
    finally:
        await provider.close()


async def test_the_fetch_deadline_holds(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """A provider that stalls 5 s: a token of an unknown kid is refused after the 0.3 s
    deadline, not 5 s, and the keys already held are kept."""
    fake, url = idp
    sign_in, provider = await _sign_in(url, timeout=0.3)
    try:
        assert await provider.refresh()
        fake.stall = 5.0
        started = time.monotonic()
        with pytest.raises(UnknownKeyError):
            await sign_in.citizen(_token(keys["p256"]))
        elapsed = time.monotonic() - started
        assert 0.25 < elapsed < 1.5, elapsed
        assert set(provider.keys) == {"rsa"}
    finally:
        await provider.close()


async def test_a_document_of_another_issuer_lends_no_keys(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """A discovery document naming another issuer is refused: no keys, no metadata, and the
    JWKS is never fetched."""
    fake, url = idp
    fake.issuer = "https://someone-else.example"
    sign_in, provider = await _sign_in(url)
    try:
        assert not await provider.refresh()
        assert provider.metadata is None
        assert fake.hits["jwks"] == 0
        with pytest.raises(IdentityError):
            await sign_in.citizen(_token(keys["rsa"]))
    finally:
        await provider.close()


async def test_a_withdrawn_key_stops_verifying_tokens_already_seen(
    idp: tuple[FakeProvider, str], keys: dict[str, Provider]
) -> None:
    """A token verified (and remembered) under a key the provider then withdraws is refused
    after the next fetch: the remembered verifications are forgotten with the key."""
    fake, url = idp
    sign_in, provider = await _sign_in(url)
    try:
        fake.jwks = [keys["rsa"].jwk, keys["p256"].jwk]
        assert await provider.refresh()
        token = _token(keys["p256"])
        assert (await sign_in.citizen(token)).user_id == "cache-user"
        fake.jwks = [keys["rsa"].jwk]
        assert await provider.refresh()
        with pytest.raises(IdentityError):
            sign_in.verifier.verify(token, now=time.time())
    finally:
        await provider.close()


def test_static_keys_win_over_fetched_ones(keys: dict[str, Provider]) -> None:
    """A configured key (JWKS file, dev key) is kept over a fetched key of the same kid."""
    provider = ProviderKeys(
        "http://127.0.0.1:9/x",
        issuer=ISSUER,
        static={"rsa": keys["rsa"].public},
        on_keys=lambda _: None,
        timeout=1,
        min_interval=1,
    )
    provider.fetched = {"rsa": idp_key(keys["p256"].public), "p256": idp_key(keys["p256"].public)}
    assert provider.keys["rsa"] is provider.static["rsa"]
    assert sorted(provider.keys) == ["p256", "rsa"]
