"""Citizen identity: ID-token JWTs from the city's identity provider, and the dev provider.

Pure: keys are passed in; fetching or reading them is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from passcode.domain import fields
from passcode.domain.expiring import ExpiringCache

MAX_TOKEN_LENGTH = 8192  # characters: far above any real ID token, about aiohttp's header-line cap

# The algorithms each kind of public key can verify. A token is checked only with an algorithm
# of its key's kind, chosen before PyJWT sees the token: an HS256 token "signed" with an RSA
# key's PEM (the classic confusion attack), or an ES256 header naming an Ed25519 key, is refused
# here rather than left to PyJWT, which raises TypeError for some such pairs.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_RSA_MIN_BITS = 2048

# What PyJWT and cryptography can raise on hostile input besides PyJWTError: bad base64 and
# JSON, wrong types inside the header or claims, numbers out of range, nesting too deep.
_HOSTILE_INPUT_ERRORS = (
    jwt.PyJWTError,
    ValueError,  # includes binascii.Error, json.JSONDecodeError and UnicodeError
    TypeError,
    KeyError,
    OverflowError,
    RecursionError,
)


class IdentityError(Exception):
    """The token is missing, malformed, expired, or not signed by a trusted provider."""


class IdentityKeyError(ValueError):
    """An identity-provider key the service cannot use (raised at start-up, never per request)."""


@dataclass(frozen=True, slots=True)
class Citizen:
    """Who is asking. ``name`` is the full name from the token; only its mask is ever kept."""

    issuer: str
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class IdpKey:
    """An identity provider's public key and the JWS algorithms it may verify."""

    key: Any
    algorithms: frozenset[str]


def idp_key(key: object, alg: str | None = None) -> IdpKey:
    """``key`` with the algorithms of its kind, or only ``alg`` when the provider names one.

    Ed25519 verifies EdDSA, an EC key the ES algorithm of its curve (P-256, P-384, P-521), an
    RSA key of at least 2048 bits RS* and PS*. Anything else (symmetric secrets included: an
    identity provider publishes public keys) is an IdentityKeyError.
    """
    if isinstance(key, IdpKey):
        return key
    if isinstance(key, Ed25519PublicKey):
        allowed = frozenset({"EdDSA"})
    elif isinstance(key, EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        allowed = frozenset({_EC_ALGORITHMS[key.curve.name]})
    elif isinstance(key, RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            raise IdentityKeyError(f"RSA key of {key.key_size} bits; at least {_RSA_MIN_BITS}")
        allowed = _RSA_ALGORITHMS
    else:
        raise IdentityKeyError(f"unsupported identity-provider key type {type(key).__name__}")
    if alg is None:
        return IdpKey(key, allowed)
    if alg not in allowed:
        raise IdentityKeyError(f"algorithm {alg!r} does not fit a {type(key).__name__}")
    return IdpKey(key, frozenset({alg}))


def load_jwks(text: str) -> dict[str, IdpKey]:
    """Signing keys by ``kid`` from a JWK Set document (keys whose ``use`` is not ``sig``
    are left out); an unusable document or key is an IdentityKeyError naming it."""
    try:
        document = json.loads(text)
        jwks = document["keys"]
        if not isinstance(jwks, list):
            raise TypeError("keys is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        raise IdentityKeyError(f"not a JWK Set: {exc}") from exc
    keys: dict[str, IdpKey] = {}
    for n, jwk in enumerate(jwks):
        if not isinstance(jwk, dict):
            raise IdentityKeyError(f"key {n} of the JWK Set is not an object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = str(jwk.get("kid", ""))
        alg = jwk.get("alg")
        if alg is not None and not isinstance(alg, str):
            raise IdentityKeyError(f"key {kid!r}: alg is not a string")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise IdentityKeyError(f"key {kid!r}: {exc}") from exc
        try:
            keys[kid] = idp_key(key, alg)
        except IdentityKeyError as exc:
            raise IdentityKeyError(f"key {kid!r}: {exc}") from exc
    return keys


def verify_id_token(
    token: str,
    keys: Mapping[str, object],
    *,
    issuer: str,
    audience: str,
    leeway: int,
    now: float,
) -> Citizen:
    """The citizen a token names at ``now`` (Unix seconds), or IdentityError; every failure
    looks the same to callers."""
    trusted = {kid: idp_key(key) for kid, key in keys.items()}
    return _decode(token, trusted, issuer=issuer, audience=audience, leeway=leeway, now=now)[0]


def _check_times(claims: Mapping[str, Any], *, now: float, leeway: int) -> int:
    """The token's expiry, once ``exp``, ``iat`` and ``nbf`` (RFC 7519 NumericDates: JSON
    numbers, finite) admit it at ``now`` give or take ``leeway``, as PyJWT would judge them."""
    times: dict[str, float] = {}
    for name in ("exp", "iat", "nbf"):
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise IdentityError(f"{name} is not a number")
        if not -1e15 < value < 1e15:  # also false for NaN
            raise IdentityError(f"{name} is out of range")
        times[name] = value
    if times["exp"] <= now - leeway:
        raise IdentityError("the token has expired")
    if times["iat"] > now + leeway:
        raise IdentityError("the token is issued in the future")
    if "nbf" in times and times["nbf"] > now + leeway:
        raise IdentityError("the token is not yet valid")
    return int(times["exp"])


def _decode(
    token: str,
    keys: Mapping[str, IdpKey],
    *,
    issuer: str,
    audience: str,
    leeway: int,
    now: float,
) -> tuple[Citizen, int]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise IdentityError("token too long")
    try:
        header = jwt.get_unverified_header(token)
        trusted = keys.get(str(header.get("kid", "")))
        if trusted is None:
            raise IdentityError("unknown signing key")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in trusted.algorithms:
            raise IdentityError("algorithm not allowed for this key")
        claims = jwt.decode(
            token,
            key=trusted.key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            # PyJWT would judge the times by the wall clock: _check_times uses the caller's now.
            options={
                "require": ["exp", "iat", "sub", "iss", "aud"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except _HOSTILE_INPUT_ERRORS as exc:
        raise IdentityError(f"{type(exc).__name__}: {exc}") from exc
    expires_at = _check_times(claims, now=now, leeway=leeway)
    user_id = claims["sub"]
    name = claims.get("name", "")
    if not isinstance(user_id, str) or not isinstance(name, str):
        raise IdentityError("bad sub or name claim")
    try:
        # The user-id rule of every other edge (overrides, tracing, test results): a citizen
        # signed in under a sub they refuse could never be ruled on or traced.
        fields.user_id(user_id)
    except fields.FieldError as exc:
        raise IdentityError(f"sub {exc}") from exc
    return Citizen(issuer=issuer, user_id=user_id, name=name[:128]), expires_at


class IdTokenVerifier:
    """Verifies ID tokens, remembering each one verified until it expires.

    A citizen's app sends the same token with every pass refresh: the signature is checked once
    per token, the expiry on every use. Rejected tokens are never remembered. ``keys`` hold
    :class:`IdpKey` values or bare public keys (given the algorithms of their kind).
    """

    def __init__(
        self,
        keys: Mapping[str, object],
        *,
        issuer: str,
        audience: str,
        leeway: int,
        max_entries: int = 100_000,
    ) -> None:
        self.keys = {kid: idp_key(key) for kid, key in keys.items()}
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._verified: ExpiringCache[str, Citizen] = ExpiringCache(max_entries)

    def verify(self, token: str, *, now: float) -> Citizen:
        known = self._verified.get(token, now=now)
        if known is not None:
            return known
        citizen, expires_at = _decode(
            token,
            self.keys,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            now=now,
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
