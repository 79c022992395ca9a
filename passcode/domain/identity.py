"""Citizen identity: ID-token JWTs from the city's identity provider, and the dev provider.

Pure: keys are passed in; fetching or reading them is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.domain.expiring import ExpiringCache

ALGORITHMS = ["EdDSA", "ES256", "RS256"]


class IdentityError(Exception):
    """The token is missing, malformed, expired, or not signed by a trusted provider."""


@dataclass(frozen=True, slots=True)
class Citizen:
    """Who is asking. ``name`` is the full name from the token; only its mask is ever kept."""

    issuer: str
    user_id: str
    name: str


def load_jwks(text: str) -> dict[str, Any]:
    """Public keys by ``kid`` from a JWK Set document."""
    keys: dict[str, Any] = {}
    for jwk in json.loads(text)["keys"]:
        keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk).key
    return keys


def verify_id_token(
    token: str, keys: Mapping[str, Any], *, issuer: str, audience: str, leeway: int
) -> Citizen:
    """The citizen a token names, or IdentityError; every failure looks the same to callers."""
    return _decode(token, keys, issuer=issuer, audience=audience, leeway=leeway)[0]


def _decode(
    token: str, keys: Mapping[str, Any], *, issuer: str, audience: str, leeway: int
) -> tuple[Citizen, int]:
    try:
        header = jwt.get_unverified_header(token)
        key = keys.get(str(header.get("kid", "")))
        if key is None:
            raise IdentityError("unknown signing key")
        claims = jwt.decode(
            token,
            key=key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise IdentityError(str(exc)) from exc
    user_id = claims["sub"]
    name = claims.get("name", "")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= 128 or not isinstance(name, str):
        raise IdentityError("bad sub or name claim")
    return Citizen(issuer=issuer, user_id=user_id, name=name[:128]), int(claims["exp"])


class IdTokenVerifier:
    """Verifies ID tokens, remembering each one verified until it expires.

    A citizen's app sends the same token with every pass refresh: the signature is checked once
    per token, the expiry on every use. Rejected tokens are never remembered.
    """

    def __init__(
        self,
        keys: Mapping[str, Any],
        *,
        issuer: str,
        audience: str,
        leeway: int,
        max_entries: int = 100_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._verified: ExpiringCache[str, Citizen] = ExpiringCache(max_entries)

    def verify(self, token: str, *, now: float) -> Citizen:
        known = self._verified.get(token, now=now)
        if known is not None:
            return known
        citizen, expires_at = _decode(
            token, self.keys, issuer=self.issuer, audience=self.audience, leeway=self.leeway
        )
        self._verified.put(token, citizen, expires_at=expires_at + self.leeway, now=now)
        return citizen


def mint_dev_token(
    key: Ed25519PrivateKey,
    *,
    kid: str,
    issuer: str,
    audience: str,
    user_id: str,
    name: str,
    now: int,
    ttl: int,
) -> str:
    """An ID token from the development identity provider (demo, tests, load tests)."""
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": user_id,
        "name": name,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
