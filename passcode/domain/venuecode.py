"""The venue code (场所码, DESIGN §4): ``PP1:`` + Base45(COSE_Sign1 over a small CWT).

A place's printed QR, which a citizen's phone scans to check in where no terminal stands. It
names the place and its issue (a number that grows with every poster issued for the place, and
the issue time); the service keeps the current issue per place, so issuing a new poster revokes
every older one. Signed with the same keys as passes, in the same envelope
(:func:`passcode.domain.passfmt.sign_envelope`), and parsed as strictly: one canonical layout,
size caps before decoding, exact claim types.

Lifetime: a code expires at most :data:`MAX_DAYS` after its issue, so the key that signed it
verifies it for as long as it may hang: verifiers use the keys that verify printed cards
(``KeyringHolder.card_keys``: published keys plus those retired within a year). A poster is
re-issued at least once a year.

Pure: no I/O, time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from passcode.domain.model import ClaimKey, Reason
from passcode.domain.passfmt import (
    KID_LEN,
    PassError,
    b45decode,
    b45encode,
    decode_exact,
    open_envelope,
    sign_envelope,
)

PREFIX = "PP1:"
MAX_TEXT = 800  # a code with a 200-character place name is ~500 characters
MAX_PLACE_BYTES = 800  # UTF-8 of the longest place text (200 characters of up to 4 bytes)
MAX_ISSUER = 100
MAX_ISSUE = 2**53  # an issue number every JSON reader holds exactly
DAY = 86_400
MAX_DAYS = 365  # the longest a code lives: the card keys' window (a year after retirement)


class VenueClaim(IntEnum):
    """Private-use CWT claims of a venue code (beside ``iss``, ``iat``, ``exp``)."""

    PLACE = -70020  # the place id (text)
    ISSUE = -70021  # the issue number for the place (int >= 1)


@dataclass(frozen=True, slots=True)
class VenueClaims:
    """What a venue code asserts: the place and which of its issues this is."""

    issuer: str
    place: str
    issue: int
    issued_at: int
    expires_at: int


class VenueCodeError(Exception):
    """A text that is not a genuine venue code; ``reason`` says why (the verify vocabulary)."""

    reason: Reason
    detail: str

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def is_venue_code(text: str) -> bool:
    """Whether the text claims to be a venue code (by its prefix alone)."""
    return text.startswith(PREFIX)


def _check(claims: VenueClaims) -> None:
    """ValueError for claims :func:`authenticate_venue` would refuse (checked at signing)."""
    if not claims.place or len(claims.place.encode()) > MAX_PLACE_BYTES:
        raise ValueError(f"place must be 1 to {MAX_PLACE_BYTES} bytes of UTF-8")
    if not claims.issuer or len(claims.issuer) > MAX_ISSUER:
        raise ValueError(f"issuer must be 1 to {MAX_ISSUER} characters")
    if not 1 <= claims.issue <= MAX_ISSUE:
        raise ValueError(f"issue must be 1 to {MAX_ISSUE}")
    if not 0 <= claims.expires_at - claims.issued_at <= MAX_DAYS * DAY:
        raise ValueError(f"a venue code lives 0 to {MAX_DAYS} days")


def sign_venue(claims: VenueClaims, key: Ed25519PrivateKey, kid: bytes) -> str:
    """Sign claims into venue code text. ValueError for claims the decoder would refuse."""
    if len(kid) != KID_LEN:
        raise ValueError("kid must be 8 bytes")
    _check(claims)
    body: dict[int, Any] = {
        ClaimKey.ISS: claims.issuer,
        ClaimKey.IAT: claims.issued_at,
        ClaimKey.EXP: claims.expires_at,
        VenueClaim.PLACE: claims.place,
        VenueClaim.ISSUE: claims.issue,
    }
    payload = cbor2.dumps(body, canonical=True)
    text = PREFIX + b45encode(sign_envelope(payload, key, kid))
    if len(text) > MAX_TEXT:
        raise ValueError(f"venue code longer than {MAX_TEXT} characters")
    return text


_T = TypeVar("_T")


def _malformed(detail: str) -> VenueCodeError:
    return VenueCodeError(Reason.MALFORMED, detail)


def _claim(claims: dict[Any, Any], key: int, kind: type[_T]) -> _T:
    value = claims.get(key)
    if type(value) is not kind:  # exact type: no bool for int, no absent claim
        raise _malformed(f"claim {key}: missing or not {kind.__name__}")
    return value


def _parse_claims(payload: bytes) -> VenueClaims:
    """The authenticated payload's claims; unknown claims ignored, known ones strictly typed."""
    try:
        found = decode_exact(payload, "payload")
    except PassError as exc:
        raise VenueCodeError(exc.reason, exc.detail) from None
    if type(found) is not dict:
        raise _malformed("payload is not a map")
    claims = VenueClaims(
        issuer=_claim(found, ClaimKey.ISS, str),
        place=_claim(found, VenueClaim.PLACE, str),
        issue=_claim(found, VenueClaim.ISSUE, int),
        issued_at=_claim(found, ClaimKey.IAT, int),
        expires_at=_claim(found, ClaimKey.EXP, int),
    )
    try:
        _check(claims)
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    return claims


def authenticate_venue(
    text: str, keys: dict[bytes, Ed25519PublicKey], *, issuer: str | None = None
) -> tuple[VenueClaims, bytes]:
    """The claims and kid of a genuine venue code, or VenueCodeError; its window unchecked.

    Order fixes the reason: kind of code, size, envelope, key, signature, and only then the
    (now authenticated) claims, so a forger learns nothing about the claims parser.
    """
    if not text.startswith(PREFIX):
        raise VenueCodeError(Reason.UNSUPPORTED, "not a PP1 venue code")
    if len(text) > MAX_TEXT:
        raise _malformed("too long")
    try:
        raw = b45decode(text[len(PREFIX) :])
        kid, to_be_signed, signature, payload = open_envelope(raw)
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    except PassError as exc:
        raise VenueCodeError(exc.reason, exc.detail) from None
    public_key = keys.get(kid)
    if public_key is None:
        raise VenueCodeError(Reason.UNKNOWN_KEY, f"unknown kid {kid.hex()}")
    try:
        public_key.verify(signature, to_be_signed)
    except InvalidSignature:
        raise VenueCodeError(Reason.BAD_SIGNATURE, "signature does not verify") from None
    claims = _parse_claims(payload)
    if issuer is not None and claims.issuer != issuer:
        raise _malformed(f"issuer {claims.issuer!r} is not {issuer!r}")
    return claims, kid


def check_window(claims: VenueClaims, *, now: int, leeway: int) -> None:
    """EXPIRED or NOT_YET_VALID when ``now`` is outside the code's window (± leeway)."""
    if now > claims.expires_at + leeway:
        raise VenueCodeError(Reason.EXPIRED, "venue code expired: the place prints a new one")
    if claims.issued_at > now + leeway:
        raise VenueCodeError(Reason.NOT_YET_VALID, "venue code issued in the future")


def verify_venue(
    text: str,
    keys: dict[bytes, Ed25519PublicKey],
    *,
    now: int,
    leeway: int,
    issuer: str | None = None,
) -> VenueClaims:
    """A scanned venue code's claims, or VenueCodeError with the reason; says nothing about
    whether its issue is still the place's current one (the service knows that)."""
    claims, _ = authenticate_venue(text, keys, issuer=issuer)
    check_window(claims, now=now, leeway=leeway)
    return claims
