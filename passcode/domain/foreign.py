"""Foreign certificates (一码通用, DESIGN §1 and §3): what an EU DCC or a SMART Health Card is,
once decoded and authenticated, and the trust store that authenticates them.

The readers (:mod:`passcode.domain.dcc`, :mod:`passcode.domain.shc`) turn the scanned text into
a :class:`ForeignCertificate` or raise :class:`ForeignError`; a place's policy
(:mod:`passcode.domain.policy`) then judges the certificate. Pure: no I/O, time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from passcode.domain.model import Kind, Reason

DCC_PREFIX = "HC1:"  # an EU DCC's QR text
SHC_PREFIX = "shc:/"  # a SMART Health Card's QR text


def kind_of(code: str) -> Kind | None:
    """The foreign kind a scanned text claims by its prefix, or None (ours, or unknown)."""
    if code.startswith(DCC_PREFIX):
        return Kind.EU_DCC
    if code.startswith(SHC_PREFIX):
        return Kind.SHC
    return None


class Stage(StrEnum):
    """The step of reading a certificate that refused it; the conformance suites' fields
    (dgc-testdata's EXPECTED* results) map onto these, and the scan answer gets ``reason``."""

    UNPREFIX = "unprefix"  # the HC1: / shc:/ prefix
    TEXT = "text"  # Base45 (DCC), numeric mode and chunks (SHC)
    COMPRESSION = "compression"  # zlib (DCC), raw DEFLATE (SHC)
    DECODE = "decode"  # CBOR / COSE_Sign1 / CWT (DCC), JWS compact and JSON (SHC)
    VERIFY = "verify"  # signer known, signature good
    KEYUSAGE = "keyusage"  # the signer certificate may sign this type (EKU)
    EXPIRATION = "expiration"  # the certificate's (and its signer's) validity at the scan time
    SCHEMA = "schema"  # the payload's schema (DCC JSON schema, FHIR bundle shape)
    REVOCATION = "revocation"  # the issuer's revocation list


class ForeignError(Exception):
    """A code that is not a valid foreign certificate: ``reason`` is what the terminal is told,
    ``stage`` which step refused it, ``detail`` for logs and the conformance report (never a
    holder's name or payload)."""

    reason: Reason
    stage: Stage
    detail: str

    def __init__(self, reason: Reason, stage: Stage, detail: str) -> None:
        super().__init__(f"{reason.value} at {stage.value}: {detail}")
        self.reason = reason
        self.stage = stage
        self.detail = detail


class CertType(StrEnum):
    """What a certificate attests; a DCC signer's extended key usage limits which it may sign."""

    VACCINATION = "v"
    TEST = "t"
    RECOVERY = "r"


@dataclass(frozen=True, slots=True)
class ForeignCertificate:
    """An authenticated foreign certificate.

    ``payload`` is in the EU DCC payload's shape (``ver``, ``nam``, ``dob``, and one of ``v``,
    ``t``, ``r``), whatever the kind: a SMART Health Card's FHIR bundle is mapped onto it, so one
    set of CertLogic rules judges both (:mod:`passcode.domain.policy`). It never leaves the
    process: the scan log keeps ``kind``, ``issuer`` and a keyed hash of ``certificate_id``.
    """

    kind: Kind
    issuer: str  # the issuing country (ISO 3166 alpha-2) for a DCC, the issuer URL for an SHC
    certificate_id: str  # the DCC's ``ci``; for an SHC, its JWS's issuer, kid and rid/digest
    holder_name: str  # as printed (unmasked): mask it before it goes anywhere
    types: frozenset[CertType]
    issued_at: int | None  # Unix seconds
    expires_at: int | None  # Unix seconds
    payload: Mapping[str, Any] = field(repr=False)
    signer: bytes | None = None  # a DCC's signer kid: its certificate's validity bounds a cache


@dataclass(frozen=True, slots=True)
class DccSigner:
    """A document signer certificate for EU DCCs, from the trust store."""

    kid: bytes  # the first 8 bytes of SHA-256 of ``der``
    der: bytes
    certificate: x509.Certificate = field(repr=False)
    country: str | None  # from the trust list (or the certificate's subject C=)


@dataclass(frozen=True, slots=True)
class ShcIssuer:
    """A trusted SMART Health Card issuer: its keys by kid, and its revoked ``rid``s by kid
    (each with the time before which cards are revoked, or None for every card)."""

    iss: str
    keys: Mapping[str, EllipticCurvePublicKey] = field(repr=False)
    revoked: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TrustStore:
    """What every replica trusts, as one immutable value swapped whole on a change."""

    dcc: Mapping[bytes, DccSigner] = field(default_factory=dict)
    shc: Mapping[str, ShcIssuer] = field(default_factory=dict)
    version: int = 0


EMPTY_TRUST = TrustStore()
