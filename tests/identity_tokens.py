"""Identity-provider keys of every kind the service supports, and hostile ID tokens against them.

Shared by the unit tests of ``passcode.domain.identity`` and the HTTP tests of ``GET /v1/pass``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "passcode-dev-idp"
AUDIENCE = "passcode"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Provider:
    """One provider key: its kid, its private key, the algorithm it signs with, and its JWK."""

    kid: str
    private: Any
    alg: str
    jwk: dict[str, Any]

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_encodings(self) -> dict[str, bytes]:
        """What an HS256-confusion attacker would use as the HMAC secret."""
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        encodings = {
            "pem": self.public.public_bytes(serialization.Encoding.PEM, spki),
            "der": self.public.public_bytes(serialization.Encoding.DER, spki),
            "jwk": json.dumps(self.jwk).encode(),
        }
        if isinstance(self.public, ed25519.Ed25519PublicKey):
            encodings["raw"] = self.public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return encodings


def _jwk(kid: str, key: Any, alg: str | None) -> dict[str, Any]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def make_providers() -> dict[str, Provider]:
    """An Ed25519, P-256, P-384, P-521 and two RSA keys (one without ``alg``: RS256 signs; one
    configured ``PS256``), by kid."""
    specs: list[tuple[str, Any, str, str | None]] = [
        ("ed", ed25519.Ed25519PrivateKey.generate(), "EdDSA", None),
        ("p256", ec.generate_private_key(ec.SECP256R1()), "ES256", None),
        ("p384", ec.generate_private_key(ec.SECP384R1()), "ES384", None),
        ("p521", ec.generate_private_key(ec.SECP521R1()), "ES512", None),
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", None),
        (
            "rsa-ps",
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "PS256",
            "PS256",
        ),
    ]
    return {kid: Provider(kid, key, alg, _jwk(kid, key, cfg)) for kid, key, alg, cfg in specs}


def jwks_text(providers: dict[str, Provider]) -> str:
    return json.dumps({"keys": [p.jwk for p in providers.values()]})


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "hostile-user",
        "name": "Hostile Tester",
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def good_token(provider: Provider, **extra: Any) -> str:
    return jwt.encode(
        claims(**extra), provider.private, provider.alg, headers={"kid": provider.kid}
    )


def _raw(header: Any, payload: Any = None, signature: bytes = b"\x00" * 64) -> str:
    head = header if isinstance(header, str) else b64(json.dumps(header).encode())
    body = b64(json.dumps(claims() if payload is None else payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def _hmac_token(kid: str, alg: str, secret: bytes) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    head = b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64(signature)}"


# Keys the attacker holds: one of every kind, none of them a provider's.
_ATTACKER = {
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "ES512": ec.generate_private_key(ec.SECP521R1()),
    "RSA": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


def hostile_tokens(target: Provider, providers: dict[str, Provider]) -> dict[str, str]:
    """Tokens naming ``target``'s kid that must all be refused: every JWS algorithm family
    signed with a key that is not the provider's, the provider's own key with an algorithm it is
    not configured for, HS* "signed" with its public key (PEM, DER, JWK, raw), ``none``,
    headers that are garbage or of the wrong types, and tokens too big or not JWTs at all."""
    kid = target.kid
    tokens: dict[str, str] = {}
    for alg in ("EdDSA", "ES256", "ES384", "ES512"):
        tokens[f"{alg} attacker-signed"] = jwt.encode(
            claims(), _ATTACKER[alg], alg, headers={"kid": kid}
        )
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        tokens[f"{alg} attacker-signed"] = jwt.encode(
            claims(), _ATTACKER["RSA"], alg, headers={"kid": kid}
        )
    # The provider's own private key, but an algorithm other than the ones it may verify:
    # ES256 on P-384 (and every other curve pairing), RS256 for an RSA key configured PS256.
    if isinstance(target.private, ec.EllipticCurvePrivateKey):
        for alg, digest in (
            ("ES256", hashes.SHA256),
            ("ES384", hashes.SHA384),
            ("ES512", hashes.SHA512),
        ):
            if alg != target.alg:
                tokens[f"{alg} with the provider's own key"] = _ecdsa(target, alg, digest())
    if isinstance(target.private, rsa.RSAPrivateKey) and "alg" in target.jwk:
        for alg in ("RS256", "RS512", "PS384"):
            tokens[f"{alg} with the provider's own key"] = sign(claims(), target.private, alg, kid)
    for alg in ("HS256", "HS384", "HS512"):
        for name, secret in target.public_encodings().items():
            tokens[f"{alg} keyed with the public key ({name})"] = _hmac_token(kid, alg, secret)
        tokens[f"{alg} empty secret"] = _hmac_token(kid, alg, b"")
    for alg in ("none", "None", "NONE", ""):
        tokens[f"alg {alg!r}, no signature"] = (
            _raw({"alg": alg, "kid": kid}).rsplit(".", 1)[0] + "."
        )
    tokens["alg none with a signature"] = _raw({"alg": "none", "kid": kid})
    for name, value in {
        "null": None,
        "number": 256,
        "list": [target.alg],
        "object": {"alg": target.alg},
        "unknown": "ES256K",
        "lowercase": target.alg.lower(),
    }.items():
        tokens[f"alg {name}"] = _raw({"alg": value, "kid": kid})
    tokens["no alg"] = _raw({"kid": kid})
    tokens["kid a list"] = _raw({"alg": target.alg, "kid": [kid]})
    tokens["kid of another provider"] = jwt.encode(
        claims(), target.private, target.alg, headers={"kid": _other(kid, providers)}
    )
    tokens["header not JSON"] = b64(b"\xff\xfe{") + "." + b64(b"{}") + ".AAAA"
    tokens["header a JSON list"] = _raw([target.alg, kid])
    tokens["header a JSON string"] = _raw("IkVkRFNBIg")  # "EdDSA"
    tokens["header nested 5000 deep"] = b64(b"[" * 5000 + b"]" * 5000) + ".e30.AAAA"
    tokens["crit header"] = _raw({"alg": target.alg, "kid": kid, "crit": ["exp"]})
    tokens["huge header"] = _raw({"alg": target.alg, "kid": kid, "x": "A" * 20_000})
    tokens["payload not JSON"] = (
        b64(json.dumps({"alg": target.alg, "kid": kid}).encode()) + ".!!!.AAAA"
    )
    tokens["signature not base64url"] = good_token(target).rsplit(".", 1)[0] + ".***"
    tokens["signature cut short"] = good_token(target)[:-10]
    tokens["signature of another token"] = (
        good_token(target, sub="someone-else").rsplit(".", 1)[0]
        + "."
        + good_token(target).rsplit(".", 1)[1]
    )
    tokens["two segments"] = "eyJhbGciOiJFZERTQSJ9.e30"
    tokens["four segments"] = good_token(target) + ".AAAA"
    tokens["not base64 at all"] = "@@@.@@@.@@@"
    tokens["one dot"] = "."
    tokens["surrogate in the token"] = "eyJ\udcff.e30.AAAA"
    tokens["10 KB of dots"] = "." * 10_000
    return tokens


def hostile_claims(target: Provider) -> dict[str, str]:
    """Tokens signed by the provider itself whose claims are hostile: every one must be refused
    ."""
    now = int(time.time())
    cases: dict[str, dict[str, Any]] = {
        "exp infinity": {"exp": float("inf")},
        "exp NaN": {"exp": float("nan")},
        "exp a string": {"exp": "tomorrow"},
        "exp a list": {"exp": [now + 600]},
        "iat in the future": {"iat": now + 86_400},
        "iat NaN": {"iat": float("nan")},
        "nbf a dict": {"nbf": {}},
        "sub a number": {"sub": 12},
        "sub empty": {"sub": ""},
        "sub 10 KB": {"sub": "u" * 10_000},
        "sub with a newline": {"sub": "alice\nbob"},
        "sub with a bidi control": {"sub": "alice\u202e"},
        "sub padded with spaces": {"sub": " alice "},
        "name a list": {"name": ["a"]},
        "aud a dict": {"aud": {"x": 1}},
        "aud a list of lists": {"aud": [[AUDIENCE]]},
        "iss a number": {"iss": 7},
        "expired": {"exp": now - 3600, "iat": now - 7200},
    }
    return {
        name: sign(claims(**c), target.private, target.alg, target.kid) for name, c in cases.items()
    }


def sign(payload: dict[str, Any], key: Any, alg: str, kid: str) -> str:
    """A JWS over ``payload`` as JSON, with none of PyJWT's checks of what it signs."""
    body = json.dumps(payload).encode()
    return jwt.PyJWS().encode(body, key, algorithm=alg, headers={"kid": kid})


def _ecdsa(target: Provider, alg: str, digest: hashes.HashAlgorithm) -> str:
    """An ES* token signed on the provider's curve with another ES algorithm's hash (which
    PyJWT refuses to make): raw r||s, each the size of the curve's order."""
    head = b64(json.dumps({"alg": alg, "kid": target.kid}).encode())
    body = b64(json.dumps(claims()).encode())
    der = target.private.sign(f"{head}.{body}".encode(), ec.ECDSA(digest))
    r, s = decode_dss_signature(der)
    size = (target.private.curve.key_size + 7) // 8
    return f"{head}.{body}.{b64(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"


def _other(kid: str, providers: dict[str, Provider]) -> str:
    return next(k for k in providers if k != kid)
