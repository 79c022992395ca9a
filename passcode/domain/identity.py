"""Citizen identity: ID-token JWTs from the city's identity provider, and the dev provider.

Pure: keys, documents and times are passed in; fetching them is :mod:`passcode.service.oidc`'s
business. Also here: the checks of an OpenID Connect discovery document and of PKCE (S256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
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


class UnknownKeyError(IdentityError):
    """The token names a ``kid`` the verifier does not hold: the provider may have rotated."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown signing key")
        self.kid = kid


class IdentityKeyError(ValueError):
    """An identity-provider key or document the service cannot use (never raised per request)."""


@dataclass(frozen=True, slots=True)
class Citizen:
    """Who is asking. ``name`` is the full name from the token; only its mask is ever kept."""

    issuer: str
    user_id: str
    name: str
    issued_at: float | None = None  # the token's iat: how recently the citizen signed in


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


MAX_DOCUMENT_BYTES = 256 * 1024  # a discovery document or JWK Set; real ones are a few KiB
MAX_JWKS_KEYS = 100


def load_jwks(text: str | bytes, *, skip_unusable: bool = False) -> dict[str, IdpKey]:
    """Signing keys by ``kid`` from a JWK Set document (keys whose ``use`` is not ``sig``
    are left out); an unusable document or key is an IdentityKeyError naming it.

    ``skip_unusable`` leaves out keys of kinds the service cannot verify with (a fetched
    provider set may hold an Ed448 or 1024-bit key beside the one that signs ID tokens); the
    document itself must still be a JWK Set, and at least one key must be usable.
    """
    if len(text) > MAX_DOCUMENT_BYTES:
        raise IdentityKeyError(f"JWK Set above {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(text)
        jwks = document["keys"]
        if not isinstance(jwks, list):
            raise TypeError("keys is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        raise IdentityKeyError(f"not a JWK Set: {exc}") from exc
    except RecursionError as exc:
        raise IdentityKeyError("not a JWK Set: nested too deep") from exc
    if len(jwks) > MAX_JWKS_KEYS:
        raise IdentityKeyError(f"JWK Set of {len(jwks)} keys; at most {MAX_JWKS_KEYS}")
    keys: dict[str, IdpKey] = {}
    for n, jwk in enumerate(jwks):
        try:
            found = _jwk_key(n, jwk)
        except IdentityKeyError:
            if skip_unusable:
                continue
            raise
        if found is not None:
            keys[found[0]] = found[1]
    if skip_unusable and jwks and not keys:
        raise IdentityKeyError("no usable signing key in the JWK Set")
    return keys


def _jwk_key(n: int, jwk: object) -> tuple[str, IdpKey] | None:
    """One JWK as (kid, key), None for a key not meant for signatures."""
    if not isinstance(jwk, dict):
        raise IdentityKeyError(f"key {n} of the JWK Set is not an object")
    if jwk.get("use", "sig") != "sig":
        return None
    kid = str(jwk.get("kid", ""))
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise IdentityKeyError(f"key {kid!r}: alg is not a string")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise IdentityKeyError(f"key {kid!r}: {exc}") from exc
    try:
        return kid, idp_key(key, alg)
    except IdentityKeyError as exc:
        raise IdentityKeyError(f"key {kid!r}: {exc}") from exc


def same_key(a: IdpKey, b: IdpKey) -> bool:
    """Whether two keys are one public key (a JWKS file and a fetched set may both hold it)."""
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return bool(a.key.public_bytes(*spki) == b.key.public_bytes(*spki))
    except (AttributeError, TypeError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What an OpenID provider's discovery document tells a relying party and its pages."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None = None


def _endpoint(document: Mapping[str, Any], name: str) -> str:
    """``document[name]`` as an absolute https URL (http only on a loopback host: a provider
    started by the tests or dev mode's own), else IdentityKeyError."""
    value = document.get(name)
    if not isinstance(value, str) or len(value) > 2048:
        raise IdentityKeyError(f"discovery: {name} is missing or not a string")
    parts = urlsplit(value)
    if not parts.hostname or parts.fragment or parts.username or parts.password:
        raise IdentityKeyError(f"discovery: {name} is not an absolute URL")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and _loopback(parts.hostname):
        return value
    raise IdentityKeyError(f"discovery: {name} must be https (http only on loopback)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_discovery(raw: str | bytes, *, issuer: str) -> ProviderMetadata:
    """The provider metadata (OpenID Connect Discovery 1.0) of the configured ``issuer``.

    Refused (IdentityKeyError): a document above MAX_DOCUMENT_BYTES or not a JSON object, an
    ``issuer`` other than the configured one exactly (a document served for another provider
    must not lend us its keys), endpoints that are not absolute https URLs, and a provider that
    does not offer PKCE with S256 (the pages' only way to sign in) or the code flow.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise IdentityKeyError(f"discovery document above {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise IdentityKeyError(f"discovery document is not JSON: {type(exc).__name__}") from exc
    if not isinstance(document, dict):
        raise IdentityKeyError("discovery document is not a JSON object")
    if document.get("issuer") != issuer:
        raise IdentityKeyError(f"discovery: issuer is not the configured {issuer!r}")
    methods = document.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise IdentityKeyError("discovery: the provider does not offer PKCE with S256")
    response_types = document.get("response_types_supported", ["code"])
    if not isinstance(response_types, list) or "code" not in response_types:
        raise IdentityKeyError("discovery: the provider does not offer the code flow")
    end_session = (
        _endpoint(document, "end_session_endpoint")
        if document.get("end_session_endpoint") is not None
        else None
    )
    return ProviderMetadata(
        issuer=issuer,
        jwks_uri=_endpoint(document, "jwks_uri"),
        authorization_endpoint=_endpoint(document, "authorization_endpoint"),
        token_endpoint=_endpoint(document, "token_endpoint"),
        end_session_endpoint=end_session,
    )


# RFC 7636 §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # base64url of a SHA-256, unpadded


def s256_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``code_verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def valid_pkce_challenge(challenge: str) -> bool:
    """Whether ``challenge`` has the shape of an S256 challenge."""
    return bool(_PKCE_CHALLENGE.fullmatch(challenge))


def pkce_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` is the one the S256 ``challenge`` was made from (constant time)."""
    if not _PKCE_VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)


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
        kid = str(header.get("kid", ""))
        trusted = keys.get(kid)
        if trusted is None:
            raise UnknownKeyError(kid[:128])
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
    citizen = Citizen(issuer=issuer, user_id=user_id, name=name[:128], issued_at=claims["iat"])
    return citizen, expires_at


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

    def replace_keys(self, keys: Mapping[str, object]) -> None:
        """Trust ``keys`` from now on (a provider's fetched set). When a key is withdrawn or
        changes under its kid, the tokens remembered as verified are forgotten: each is
        checked again against the keys still trusted."""
        new = {kid: idp_key(key) for kid, key in keys.items()}
        withdrawn = any(kid not in new or not same_key(new[kid], k) for kid, k in self.keys.items())
        self.keys = new
        if withdrawn:
            self._verified = ExpiringCache(self._verified.max_entries)

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
    nonce: str | None = None,
) -> str:
    """An ID token from the development identity provider (demo, tests, load tests; its login
    page passes the ``nonce`` of the authorization request)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": user_id,
        "name": name,
        "iat": now,
        "exp": now + ttl,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
