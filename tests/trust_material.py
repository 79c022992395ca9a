"""Foreign signers made for the trust-store tests with ``cryptography``: DCC document signer
certificates (DER) and SMART Health Card issuer keys (JWKS, CRLs)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from passcode.domain.dcc import kid_of

UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.99999.1")


def dsc(country: str = "DE", *, unknown_critical: bool = False, padding: int = 0) -> bytes:
    """A fresh self-signed ES256 document signer certificate (DER); ``unknown_critical`` adds
    a critical extension no verifier knows, ``padding`` a non-critical one of that many
    bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, f"DSC test {uuid.uuid4().hex[:8]}"),
        ]
    )
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )
    if unknown_critical:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=True
        )
    if padding:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"\x00" * padding),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def kid64(der: bytes) -> str:
    """A certificate's kid as GET /v1/trust writes it (standard base64)."""
    return b64(kid_of(der))


def trust_list_entry(der: bytes, country: str = "DE", kind: str = "DSC") -> dict[str, Any]:
    """One entry of the EU gateway's trust list."""
    return {
        "kid": kid64(der),
        "country": country,
        "certificateType": kind,
        "thumbprint": hashlib.sha256(der).hexdigest(),
        "timestamp": "2021-06-01T00:00:00Z",
        "rawData": b64(der),
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def issuer_jwk(**changes: Any) -> dict[str, Any]:
    """A fresh SHC issuer signing key as a public JWK (kid: its RFC 7638 thumbprint)."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    x, y = _b64url(numbers.x.to_bytes(32, "big")), _b64url(numbers.y.to_bytes(32, "big"))
    thumb = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
    )
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": _b64url(hashlib.sha256(thumb.encode()).digest()),
        "use": "sig",
        "alg": "ES256",
    }
    return {**jwk, **changes}


def crl(kid: str, *rids: str, ctr: int = 1) -> dict[str, Any]:
    return {"kid": kid, "method": "rid", "ctr": ctr, "rids": list(rids)}


def issuer_url() -> str:
    return f"https://issuer-{uuid.uuid4().hex[:10]}.example.org/shc"
