"""Build EU DCCs and their document signer certificates for tests, the fuzz harness and the bench.

Written with ``cryptography`` and ``cbor2`` directly (not with the reader under test), so a test
that reads what this makes checks the reader against an independent encoder.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from passcode.domain.dcc import kid_of
from passcode.domain.passfmt import b45encode

EKU_TEST = "1.3.6.1.4.1.1847.2021.1.1"
EKU_VACCINATION = "1.3.6.1.4.1.1847.2021.1.2"
EKU_RECOVERY = "1.3.6.1.4.1.1847.2021.1.3"
EKU_VACCINATION_ALT = "1.3.6.1.4.1.0.1847.2021.1.2"

NOW = 1_700_000_000
SCHEMA_VERSION = "1.3.0"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Signer:
    key: Key
    der: bytes

    @property
    def kid(self) -> bytes:
        return kid_of(self.der)


def make_signer(
    *,
    key: Key | None = None,
    country: str = "XX",
    ekus: tuple[str, ...] = (),
    not_before: int = NOW - 86_400 * 30,
    not_after: int = NOW + 86_400 * 365,
    extra: x509.ExtensionType | None = None,
    extra_critical: bool = False,
) -> Signer:
    """A self-issued document signer certificate (the reader checks no chain)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, "DSC test"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(not_before, UTC))
        .not_valid_after(datetime.fromtimestamp(not_after, UTC))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    )
    if ekus:
        usages = [x509.ObjectIdentifier(oid) for oid in ekus]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=extra_critical)
    certificate = builder.sign(key, hashes.SHA256())
    return Signer(key=key, der=certificate.public_bytes(serialization.Encoding.DER))


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def vaccination(*, given: str | None = "Erika", family: str = "Mustermann") -> dict[str, Any]:
    """A schema-valid vaccination payload (``given=None`` leaves the given name out)."""
    nam: dict[str, str] = {"fn": family, "fnt": family.upper()}
    if given is not None:
        nam |= {"gn": given, "gnt": given.upper()}
    return {
        "ver": SCHEMA_VERSION,
        "nam": nam,
        "dob": "1964-08-12",
        "v": [
            {
                "tg": "840539006",
                "vp": "1119349007",
                "mp": "EU/1/20/1528",
                "ma": "ORG-100030215",
                "dn": 2,
                "sd": 2,
                "dt": "2021-05-29",
                "co": "XX",
                "is": "Test Ministry",
                "ci": "URN:UVCI:01:XX:TEST0000000001#A",
            }
        ],
    }


def pcr_test() -> dict[str, Any]:
    """A schema-valid (PCR) test payload."""
    return {
        "ver": SCHEMA_VERSION,
        "nam": {"fn": "Mustermann", "fnt": "MUSTERMANN", "gn": "Erika", "gnt": "ERIKA"},
        "dob": "1964-08-12",
        "t": [
            {
                "tg": "840539006",
                "tt": "LP6464-4",
                "sc": "2021-05-29T10:00:00Z",
                "tr": "260415000",
                "tc": "Test centre",
                "co": "XX",
                "is": "Test Ministry",
                "ci": "URN:UVCI:01:XX:TEST0000000002#B",
            }
        ],
    }


def claims(
    payload: Any, *, iat: float | None = NOW - 3600, exp: float | None = NOW + 86_400
) -> dict[int, Any]:
    out: dict[int, Any] = {1: "XX", -260: {1: payload}}
    if iat is not None:
        out[6] = iat
    if exp is not None:
        out[4] = exp
    return out


def sign(
    signer: Signer,
    payload_claims: Any,
    *,
    alg: int | None = None,
    kid: bytes | None = None,
    kid_in: str = "protected",
    tags: tuple[int, ...] = (18,),
    compress: bool = True,
    raw_payload: bytes | None = None,
    corrupt: bool = False,
) -> str:
    """``HC1:`` text of a COSE_Sign1 over the claims. ``tags`` wrap the message outermost first
    (``(61, 18)`` is a CWT around a COSE_Sign1, ``()`` untagged); ``kid_in`` is "protected",
    "unprotected" or "none"; ``corrupt`` flips a signature bit."""
    key = signer.key
    if alg is None:
        alg = -7 if isinstance(key, ec.EllipticCurvePrivateKey) else -37
    kid = signer.kid if kid is None else kid
    protected_map: dict[int, Any] = {1: alg}
    unprotected: dict[int, Any] = {}
    if kid_in == "protected":
        protected_map[4] = kid
    elif kid_in == "unprotected":
        unprotected[4] = kid
    protected = cbor2.dumps(protected_map)
    payload = raw_payload if raw_payload is not None else cbor2.dumps(payload_claims)
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        signature = key.sign(to_sign, pss, hashes.SHA256())
    if corrupt:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    message: Any = [protected, unprotected, payload, signature]
    for tag in reversed(tags):
        message = cbor2.CBORTag(tag, message)
    raw = cbor2.dumps(message)
    return "HC1:" + b45encode(zlib.compress(raw, 9) if compress else raw)


def hc1(raw_cose: bytes) -> str:
    """``HC1:`` text around arbitrary COSE bytes (compressed like a genuine certificate)."""
    return "HC1:" + b45encode(zlib.compress(raw_cose, 9))
