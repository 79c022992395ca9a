"""The pass format (DESIGN §2, docs/pass-format.md): ``PC1:`` + Base45(COSE_Sign1 over a CWT).

Pure and strict. Signing uses cbor2; verifying parses the fixed COSE envelope by hand (it only
accepts the canonical encoding we produce), so the Ed25519 input is sliced straight out of the
message and CBOR is decoded only for the two small maps. Every rejection is a ``PassError`` whose
``reason`` is the code a terminal is told.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from passcode.domain.model import ClaimKey, Color, Reason

PREFIX = "PC1:"
MAX_TEXT = 1024  # a real pass is ~250 chars; anything far longer is refused before decoding
ALG_EDDSA = -8
KID_LEN = 8
SUBJECT_LEN = 16
MIN_CTI_LEN = 8
MIN_CARD_LEN, MAX_CARD_LEN = 8, 32  # a card serial: random bytes (16 in practice)

_HDR_ALG, _HDR_CRIT, _HDR_KID = 1, 2, 4

# --- Base45 (RFC 9285) -------------------------------------------------------------------------

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_VALUES = bytes(_B45.index(chr(c)) if chr(c) in _B45 else 0xFF for c in range(256))


def b45encode(data: bytes) -> str:
    """Encode bytes as Base45: QR alphanumeric mode packs it at 5.5 bits per character."""
    out: list[str] = []
    for a, b in zip(data[0::2], data[1::2], strict=False):
        n, c = divmod((a << 8) | b, 45)
        e, d = divmod(n, 45)
        out += (_B45[c], _B45[d], _B45[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (_B45[c], _B45[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode Base45, refusing anything but the one canonical encoding of some bytes.

    Raises ValueError for characters outside the alphabet, a dangling single character, or a
    group whose value does not fit its bytes (a lax decoder would wrap it, giving a second
    spelling of the same pass).
    """
    if not text.isascii():
        raise ValueError("base45: non-ASCII character")
    vals = text.encode("ascii").translate(_B45_VALUES)
    if 0xFF in vals:
        raise ValueError("base45: character outside the alphabet")
    full, rest = divmod(len(vals), 3)
    if rest == 1:
        raise ValueError("base45: length leaves a dangling character")
    end = full * 3
    # Every group at once, without a Python loop: each digit column goes into its own 32-bit
    # lane of one big integer, so c + 45*d + 2025*e (at most 91,124) never carries into the
    # next lane; the lanes' third bytes are non-zero exactly where a group exceeds 65535.
    lanes = bytearray(4 * full)
    lanes[0::4] = vals[0:end:3]
    c = int.from_bytes(lanes, "little")
    lanes[0::4] = vals[1:end:3]
    d = int.from_bytes(lanes, "little")
    lanes[0::4] = vals[2:end:3]
    e = int.from_bytes(lanes, "little")
    words = (c + 45 * d + 2025 * e).to_bytes(4 * full, "little")
    if words[2::4].count(0) != full:
        raise ValueError("base45: group value above 65535")
    out = bytearray(2 * full + (rest == 2))
    out[0 : 2 * full : 2] = words[1::4]
    out[1 : 2 * full : 2] = words[0::4]
    if rest:
        last = vals[end] + 45 * vals[end + 1]
        if last > 0xFF:
            raise ValueError("base45: final pair value above 255")
        out[-1] = last
    return bytes(out)


# --- keys and subjects -------------------------------------------------------------------------


def kid_of(public_key: Ed25519PublicKey) -> bytes:
    """Key id: the first 8 bytes of SHA-256 of the raw public key (DESIGN §1)."""
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:KID_LEN]


def subject_text(subject: bytes) -> str:
    """The CWT ``sub`` for a subject id: RFC 8392 wants a text string, so base64url unpadded."""
    return base64.urlsafe_b64encode(subject).rstrip(b"=").decode("ascii")


def subject_from_text(text: str) -> bytes:
    """Inverse of ``subject_text``; ValueError unless it is the canonical text of 16 bytes."""
    if len(text) != 22 or not text.isascii():
        raise ValueError("subject: not 22 ASCII characters")
    try:
        subject = base64.b64decode(text + "==", altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError("subject: not base64url") from None
    if len(subject) != SUBJECT_LEN or subject_text(subject) != text:
        raise ValueError("subject: not the canonical base64url of 16 bytes")
    return subject


# --- claims, signing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassClaims:
    """What a pass asserts; the colour is the one at issue time, not the live status.

    ``card`` is a printed card's serial (claim -70010): set, the pass is a card (纸质码), which
    lives for months and is revocable by that serial; None for a phone's pass.
    """

    issuer: str
    subject: bytes
    issued_at: int
    expires_at: int
    token_id: bytes
    color: Color
    version: int
    card: bytes | None = None


class PassError(Exception):
    """A code that is not a valid pass; ``reason`` is what the terminal is told."""

    reason: Reason
    detail: str

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def sign_pass(claims: PassClaims, key: Ed25519PrivateKey, kid: bytes) -> str:
    """Sign claims into pass text. ValueError for claims ``verify_pass`` would refuse."""
    if len(kid) != KID_LEN:
        raise ValueError("kid must be 8 bytes")
    if len(claims.subject) != SUBJECT_LEN:
        raise ValueError("subject must be 16 bytes")
    if len(claims.token_id) < MIN_CTI_LEN:
        raise ValueError("token_id must be at least 8 bytes")
    if claims.version < 0:
        raise ValueError("version must be >= 0")
    if claims.card is not None and not MIN_CARD_LEN <= len(claims.card) <= MAX_CARD_LEN:
        raise ValueError(f"card serial must be {MIN_CARD_LEN} to {MAX_CARD_LEN} bytes")
    protected = cbor2.dumps({_HDR_ALG: ALG_EDDSA, _HDR_KID: bytes(kid)}, canonical=True)
    body: dict[int, Any] = {
        ClaimKey.ISS: claims.issuer,
        ClaimKey.SUB: subject_text(claims.subject),
        ClaimKey.IAT: claims.issued_at,
        ClaimKey.EXP: claims.expires_at,
        ClaimKey.CTI: bytes(claims.token_id),
        ClaimKey.STATUS: [claims.color.wire, claims.version],
    }
    if claims.card is not None:  # absent otherwise: a phone's pass keeps its exact bytes
        body[ClaimKey.CARD] = bytes(claims.card)
    payload = cbor2.dumps(body, canonical=True)
    return PREFIX + b45encode(sign_envelope(payload, key, kid, protected=protected))


def sign_envelope(
    payload: bytes, key: Ed25519PrivateKey, kid: bytes, *, protected: bytes | None = None
) -> bytes:
    """The COSE_Sign1 (tag 18, EdDSA, ``kid`` protected, no unprotected header) around
    ``payload``: the one layout :func:`open_envelope` accepts, shared by passes and venue codes."""
    if protected is None:
        protected = cbor2.dumps({_HDR_ALG: ALG_EDDSA, _HDR_KID: bytes(kid)}, canonical=True)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload], canonical=True))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]), canonical=True)


# --- verifying ---------------------------------------------------------------------------------

_T = TypeVar("_T")
_COSE_SIGN1_HEAD = b"\xd2\x84"  # tag 18, array of 4
_EMPTY_MAP = 0xA0
_SIG1_HEAD = b"\x84\x6aSignature1"  # Sig_structure: array of 4, "Signature1"; then the bstrs
_EMPTY_BSTR = b"\x40"  # external_aad
_NO_CARD: Any = object()  # the card claim's absence (a phone's pass)


def _malformed(detail: str) -> PassError:
    return PassError(Reason.MALFORMED, detail)


def _bstr_at(raw: bytes, pos: int) -> tuple[int, int]:
    """(content start, end) of the canonically encoded byte string whose head is at ``pos``."""
    if pos >= len(raw):
        raise _malformed("COSE message truncated")
    head = raw[pos]
    if 0x40 <= head <= 0x57:
        start, size = pos + 1, head - 0x40
    elif head == 0x58 and pos + 1 < len(raw) and raw[pos + 1] >= 24:
        start, size = pos + 2, raw[pos + 1]
    elif head == 0x59 and pos + 2 < len(raw) and raw[pos + 1] != 0:
        start, size = pos + 3, int.from_bytes(raw[pos + 1 : pos + 3], "big")
    else:
        raise _malformed("expected a canonically encoded byte string")
    if start + size > len(raw):
        raise _malformed("COSE message truncated")
    return start, start + size


def _decode_exact(data: bytes, what: str) -> Any:
    """One CBOR item that spans all of ``data``; any decoder failure is MALFORMED."""
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises several types, incl. ValueError/TypeError from tags
        raise _malformed(f"{what}: bad CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(data):
        raise _malformed(f"{what}: trailing bytes")
    return value


def _claim(claims: dict[Any, Any], key: int, kind: type[_T]) -> _T:
    value = claims.get(key)
    if type(value) is not kind:  # exact type: rejects bool for int, absent claims
        raise _malformed(f"claim {key}: missing or not {kind.__name__}")
    return value


def _parse_claims(payload: bytes) -> PassClaims:
    """The claims map; unknown claims are ignored (CWT convention), known ones strictly typed."""
    claims = _decode_exact(payload, "payload")
    if type(claims) is not dict:
        raise _malformed("payload is not a map")
    try:
        subject = subject_from_text(_claim(claims, ClaimKey.SUB, str))
    except ValueError:
        raise _malformed("sub is not the text of a 16-byte subject id") from None
    token_id = _claim(claims, ClaimKey.CTI, bytes)
    if len(token_id) < MIN_CTI_LEN:
        raise _malformed("cti shorter than 8 bytes")
    status = _claim(claims, ClaimKey.STATUS, list)
    if len(status) != 2 or type(status[0]) is not int or type(status[1]) is not int:
        raise _malformed("status claim is not [colour, version]")
    try:
        color = Color.from_wire(status[0])
    except ValueError:
        raise _malformed(f"unknown colour code {status[0]}") from None
    if status[1] < 0:
        raise _malformed("negative status version")
    card = claims.get(ClaimKey.CARD, _NO_CARD)  # one lookup; a CBOR null is not an absence
    if card is _NO_CARD:
        card = None
    elif type(card) is not bytes or not MIN_CARD_LEN <= len(card) <= MAX_CARD_LEN:
        raise _malformed(f"card claim is not {MIN_CARD_LEN} to {MAX_CARD_LEN} bytes")
    return PassClaims(
        issuer=_claim(claims, ClaimKey.ISS, str),
        subject=subject,
        issued_at=_claim(claims, ClaimKey.IAT, int),
        expires_at=_claim(claims, ClaimKey.EXP, int),
        token_id=token_id,
        color=color,
        version=status[1],
        card=card,
    )


def _open_envelope(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Split a COSE_Sign1 into (kid, to-be-signed, signature, payload); MALFORMED/UNSUPPORTED.

    Accepted layout: D2 84 <bstr protected> A0 <bstr payload> <bstr signature>, canonical heads,
    nothing after. Because it is canonical, its bstr encodings are byte-for-byte those of the
    Sig_structure, which is therefore assembled from slices without re-encoding.
    """
    if not raw.startswith(_COSE_SIGN1_HEAD):
        raise _malformed("not a tagged COSE_Sign1 (tag 18, array of 4)")
    prot_start, prot_end = _bstr_at(raw, 2)
    if prot_end >= len(raw) or raw[prot_end] != _EMPTY_MAP:
        raise _malformed("unprotected header is not an empty map")
    payload_start, payload_end = _bstr_at(raw, prot_end + 1)
    sig_start, sig_end = _bstr_at(raw, payload_end)
    if sig_end != len(raw):
        raise _malformed("trailing data after COSE_Sign1")

    header = _decode_exact(raw[prot_start:prot_end], "protected header")
    if type(header) is not dict:
        raise _malformed("protected header is not a map")
    alg = header.get(_HDR_ALG)
    if alg is None:
        raise _malformed("no alg in protected header")
    if type(alg) is not int or alg != ALG_EDDSA or _HDR_CRIT in header:
        raise PassError(Reason.UNSUPPORTED, f"alg {alg!r} (or crit) not supported")
    kid = header.get(_HDR_KID)
    if type(kid) is not bytes or len(kid) != KID_LEN:
        raise _malformed("kid missing or not 8 bytes")
    to_be_signed = b"".join(
        (_SIG1_HEAD, raw[2:prot_end], _EMPTY_BSTR, raw[prot_end + 1 : payload_end])
    )
    return kid, to_be_signed, raw[sig_start:sig_end], raw[payload_start:payload_end]


def open_envelope(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(kid, to-be-signed, signature, payload) of a COSE_Sign1 in our one layout, or PassError
    (MALFORMED, UNSUPPORTED); the signature is not checked. Venue codes reuse it."""
    return _open_envelope(raw)


def decode_exact(data: bytes, what: str) -> Any:
    """One CBOR item spanning all of ``data``, or PassError (MALFORMED)."""
    return _decode_exact(data, what)


def authenticate_pass(
    text: str, keys: Mapping[bytes, Ed25519PublicKey], *, issuer: str | None = None
) -> tuple[PassClaims, bytes]:
    """The claims and kid of a genuine pass, or PassError; says nothing about its time window.

    Order fixes the reason reported: kind of code, envelope, key, signature, and only then the
    (now authenticated) claims.
    """
    if not text.startswith(PREFIX):
        raise PassError(Reason.UNSUPPORTED, "not a PC1 pass")
    if len(text) > MAX_TEXT:
        raise _malformed("too long")
    try:
        raw = b45decode(text[len(PREFIX) :])
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    kid, to_be_signed, signature, payload = _open_envelope(raw)
    public_key = keys.get(kid)
    if public_key is None:
        raise PassError(Reason.UNKNOWN_KEY, f"unknown kid {kid.hex()}")
    try:
        public_key.verify(signature, to_be_signed)
    except InvalidSignature:
        raise PassError(Reason.BAD_SIGNATURE, "signature does not verify") from None

    claims = _parse_claims(payload)
    if issuer is not None and claims.issuer != issuer:
        raise _malformed(f"issuer {claims.issuer!r} is not {issuer!r}")
    return claims, kid


def check_window(claims: PassClaims, *, now: int, leeway: int) -> None:
    """Raise EXPIRED or NOT_YET_VALID when ``now`` is outside the pass's window (± leeway)."""
    if now > claims.expires_at + leeway:
        raise PassError(Reason.EXPIRED, "pass expired")
    if claims.issued_at > now + leeway:
        raise PassError(Reason.NOT_YET_VALID, "pass issued in the future")


def verify_pass(
    text: str,
    keys: Mapping[bytes, Ed25519PublicKey],
    *,
    now: int,
    leeway: int,
    issuer: str | None = None,
) -> PassClaims:
    """Check a scanned code and return its claims, or raise PassError with the reason."""
    claims, _ = authenticate_pass(text, keys, issuer=issuer)
    check_window(claims, now=now, leeway=leeway)
    return claims
