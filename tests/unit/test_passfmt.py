"""The pass format (DESIGN §2): round trips, interop with pycose, and every rejection's reason."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest
import qrcode
import qrcode.util
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycose import headers
from pycose.algorithms import EdDSA
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from passcode.domain.model import Color, Reason
from passcode.domain.passfmt import (
    PREFIX,
    PassClaims,
    PassError,
    b45decode,
    b45encode,
    kid_of,
    sign_pass,
    subject_from_text,
    subject_text,
    verify_pass,
)

PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()
PUB_RAW = PUB.public_bytes_raw()
KID = kid_of(PUB)
KEYS = {KID: PUB}
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

NOW = 1_760_000_000
LEEWAY = 30
CLAIMS = PassClaims(
    issuer="passcode",
    subject=bytes(range(16)),
    issued_at=NOW,
    expires_at=NOW + 60,
    token_id=bytes(range(100, 116)),
    color=Color.YELLOW,
    version=7,
)
TEXT = sign_pass(CLAIMS, KEY, KID)
RAW = b45decode(TEXT[len(PREFIX) :])
B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
REJECTED_EDIT = {Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.UNKNOWN_KEY, Reason.UNSUPPORTED}


def verify(text: str, **kwargs: Any) -> PassClaims:
    args: dict[str, Any] = {"now": NOW, "leeway": LEEWAY, **kwargs}
    return verify_pass(text, KEYS, **args)


def reason_of(text: str, **kwargs: Any) -> Reason:
    with pytest.raises(PassError) as info:
        verify(text, **kwargs)
    return info.value.reason


def claims_map(**changes: Any) -> dict[int, Any]:
    """The CWT claims map of CLAIMS, with some claims replaced (None removes one)."""
    claims: dict[int, Any] = {
        1: CLAIMS.issuer,
        2: subject_text(CLAIMS.subject),
        6: CLAIMS.issued_at,
        4: CLAIMS.expires_at,
        7: CLAIMS.token_id,
        -70001: [CLAIMS.color.wire, CLAIMS.version],
    }
    names = {"iss": 1, "sub": 2, "iat": 6, "exp": 4, "cti": 7, "status": -70001}
    for name, value in changes.items():
        if value is None:
            del claims[names[name]]
        else:
            claims[names[name]] = value
    return claims


def hand_made(
    protected: Any = None,
    payload: bytes | None = None,
    *,
    key: Ed25519PrivateKey = KEY,
    unprotected: Any = None,
    tag: int = 18,
) -> str:
    """A properly signed pass built without the project's signer, to reach the later checks."""
    protected_bstr = cbor2.dumps({1: -8, 4: KID} if protected is None else protected)
    if payload is None:
        payload = cbor2.dumps(claims_map(), canonical=True)
    signature = key.sign(cbor2.dumps(["Signature1", protected_bstr, b"", payload]))
    body = [protected_bstr, {} if unprotected is None else unprotected, payload, signature]
    return PREFIX + b45encode(cbor2.dumps(cbor2.CBORTag(tag, body)))


def with_raw(raw: bytes) -> str:
    return PREFIX + b45encode(raw)


# --- round trip and interop ------------------------------------------------------------------


def test_round_trip_returns_identical_claims() -> None:
    """A signed pass verifies to exactly the claims it was signed with."""
    assert verify(TEXT) == CLAIMS
    assert verify(TEXT, issuer="passcode") == CLAIMS


@given(
    st.builds(
        PassClaims,
        issuer=st.text(max_size=20),
        subject=st.binary(min_size=16, max_size=16),
        issued_at=st.integers(0, 2**40),
        expires_at=st.integers(0, 2**40),
        token_id=st.binary(min_size=8, max_size=32),
        color=st.sampled_from(Color),
        version=st.integers(0, 2**63),
    )
)
@PROPERTY
def test_round_trip_any_claims(claims: PassClaims) -> None:
    """Any claims within the documented types survive sign → verify unchanged."""
    text = sign_pass(claims, KEY, KID)
    assert verify_pass(text, KEYS, now=claims.issued_at, leeway=2**41) == claims


def test_wire_layout_is_the_documented_one() -> None:
    """Envelope and claims are exactly as docs/pass-format.md describes (tag 18, headers, keys)."""
    message = cbor2.loads(RAW)
    assert message.tag == 18
    protected, unprotected, payload, signature = message.value
    assert cbor2.loads(protected) == {1: -8, 4: KID}
    assert unprotected == {}
    assert len(signature) == 64
    assert cbor2.loads(payload) == claims_map()
    assert cbor2.dumps(message, canonical=True) == RAW


def test_pycose_verifies_a_pass() -> None:
    """A COSE library the project did not write (pycose) verifies a pass and reads its claims."""
    msg = Sign1Message.decode(b45decode(TEXT[len(PREFIX) :]))
    assert msg.phdr[headers.Algorithm] is EdDSA
    assert msg.phdr[headers.KID] == KID
    msg.key = OKPKey(crv="Ed25519", x=PUB_RAW)
    assert msg.verify_signature() is True
    assert msg.payload is not None
    claims = cbor2.loads(msg.payload)
    assert claims == {
        1: "passcode",
        2: subject_text(CLAIMS.subject),
        6: NOW,
        4: NOW + 60,
        7: CLAIMS.token_id,
        -70001: [Color.YELLOW.wire, 7],
    }
    assert subject_from_text(claims[2]) == CLAIMS.subject


def test_pycose_rejects_a_pass_signed_with_another_key() -> None:
    """pycose refuses a pass carrying our kid but signed by a different private key."""
    forged = sign_pass(CLAIMS, OTHER_KEY, KID)
    msg = Sign1Message.decode(b45decode(forged[len(PREFIX) :]))
    msg.key = OKPKey(crv="Ed25519", x=PUB_RAW)
    assert msg.verify_signature() is False


def test_kid_is_sha256_prefix_of_raw_public_key() -> None:
    """kid = first 8 bytes of SHA-256 over the raw 32-byte public key (DESIGN §1)."""
    assert hashlib.sha256(PUB_RAW).digest()[:8] == KID
    assert len(KID) == 8


# --- base45 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_base45_rfc9285_vectors(data: bytes, text: str) -> None:
    """Base45 matches the RFC 9285 examples in both directions."""
    assert b45encode(data) == text
    assert b45decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # 65536: one above the largest triple
        ":::",  # 91124: the largest spelling, far above 65535
        "V5",  # final pair 256: one above a byte
        "::",  # final pair 2024
        "A",  # a dangling single character
        "BB8A",  # ditto after a full group
        "bb8",  # lower case is not in the alphabet
        "BB8=",  # '=' is not in the alphabet
        "BB\u00e9",  # non-ASCII
        "BB\x00",
    ],
)
def test_base45_rejects_invalid_and_non_canonical(text: str) -> None:
    """Out-of-range groups, bad lengths and characters outside the alphabet raise ValueError."""
    with pytest.raises(ValueError, match="base45"):
        b45decode(text)


@given(st.binary(max_size=700))
@PROPERTY
def test_base45_round_trips_any_bytes(data: bytes) -> None:
    """Any bytes survive encode → decode, using only the 45-character alphabet."""
    text = b45encode(data)
    assert set(text) <= set(B45_ALPHABET)
    assert b45decode(text) == data


@given(st.text(alphabet=B45_ALPHABET, max_size=60))
@PROPERTY
def test_base45_decode_is_canonical(text: str) -> None:
    """Whatever decodes re-encodes to the same text: one spelling per byte string."""
    try:
        data = b45decode(text)
    except ValueError:
        return
    assert b45encode(data) == text


# --- subject ids ------------------------------------------------------------------------------


@given(st.binary(min_size=16, max_size=16))
@PROPERTY
def test_subject_text_round_trips(subject: bytes) -> None:
    """A 16-byte subject id becomes 22 base64url characters and back."""
    text = subject_text(subject)
    assert len(text) == 22
    assert "=" not in text
    assert subject_from_text(text) == subject


@pytest.mark.parametrize(
    "text",
    [
        "AAECAwQFBgcICQoLDA0ODw==",  # padded
        "AAECAwQFBgcICQoLDA0ODx",  # unused low bits set: a second spelling of the same id
        "AAECAwQFBgcICQoLDA0O",  # 15 bytes
        "AAECAwQFBgcICQoLDA0ODw8",  # too long
        "AAECAwQFBgcICQoLDA0O+w",  # standard alphabet, not url-safe
        "AAECAwQFBgcICQoLDA0O.w",
        "AAECAwQFBgcICQoLDA0Oé",
    ],
)
def test_subject_from_text_rejects_non_canonical(text: str) -> None:
    """Only the canonical unpadded base64url text of exactly 16 bytes is a subject id."""
    with pytest.raises(ValueError, match="subject"):
        subject_from_text(text)


# --- rejections, one reason each --------------------------------------------------------------


def test_same_kid_other_key_is_bad_signature() -> None:
    """A known kid whose key did not make the signature is BAD_SIGNATURE."""
    assert reason_of(sign_pass(CLAIMS, OTHER_KEY, KID)) is Reason.BAD_SIGNATURE
    keys = {KID: OTHER_KEY.public_key()}
    with pytest.raises(PassError) as info:
        verify_pass(TEXT, keys, now=NOW, leeway=LEEWAY)
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_kid_not_in_keys_is_unknown_key() -> None:
    """A kid absent from the key set is UNKNOWN_KEY, whatever the signature."""
    with pytest.raises(PassError) as info:
        verify_pass(TEXT, {}, now=NOW, leeway=LEEWAY)
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert reason_of(sign_pass(CLAIMS, KEY, b"\x00" * 8)) is Reason.UNKNOWN_KEY


def test_expiry_honours_leeway_exactly() -> None:
    """Accepted up to exp + leeway inclusive; one second later is EXPIRED."""
    assert verify(TEXT, now=CLAIMS.expires_at + LEEWAY) == CLAIMS
    assert reason_of(TEXT, now=CLAIMS.expires_at + LEEWAY + 1) is Reason.EXPIRED


def test_issued_in_the_future_beyond_leeway_is_not_yet_valid() -> None:
    """A phone clock ahead by up to the leeway is fine; further ahead is NOT_YET_VALID."""
    assert verify(TEXT, now=CLAIMS.issued_at - LEEWAY) == CLAIMS
    assert reason_of(TEXT, now=CLAIMS.issued_at - LEEWAY - 1) is Reason.NOT_YET_VALID


def test_wrong_issuer_is_malformed() -> None:
    """A good signature from a different issuer is refused as MALFORMED when issuer is given."""
    assert reason_of(TEXT, issuer="someone-else") is Reason.MALFORMED


def test_error_carries_reason_and_detail() -> None:
    """PassError exposes reason and a human-readable detail."""
    with pytest.raises(PassError) as info:
        verify(TEXT, now=NOW + 1000)
    assert info.value.reason is Reason.EXPIRED
    assert info.value.detail
    assert "expired" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["", "HC1:NCFOXN%TS3DH", "https://example.org/p?x=1", "pc1:" + TEXT[4:], "PC2:" + TEXT[4:]],
)
def test_other_kinds_of_code_are_unsupported(text: str) -> None:
    """Codes without the PC1: prefix (other health codes, URLs, garbage) are UNSUPPORTED."""
    assert reason_of(text) is Reason.UNSUPPORTED


@pytest.mark.parametrize(
    ("protected", "reason"),
    [
        ({1: -7, 4: KID}, Reason.UNSUPPORTED),  # ES256
        ({1: "EdDSA", 4: KID}, Reason.UNSUPPORTED),
        ({1: -8, 2: [99], 4: KID}, Reason.UNSUPPORTED),  # crit header we do not know
        ({4: KID}, Reason.MALFORMED),  # no alg
        ({1: -8}, Reason.MALFORMED),  # no kid
        ({1: -8, 4: KID[:7]}, Reason.MALFORMED),
        ({1: -8, 4: KID.hex()}, Reason.MALFORMED),
        ([1, -8, 4, KID], Reason.MALFORMED),  # not a map
    ],
)
def test_protected_header_checks(protected: Any, reason: Reason) -> None:
    """Properly signed passes with a wrong protected header get the documented reason."""
    assert reason_of(hand_made(protected)) is reason


def test_hand_made_pass_with_documented_layout_is_accepted() -> None:
    """The test builder itself produces acceptable passes (so the cases around it are fair)."""
    assert verify(hand_made()) == CLAIMS


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps(claims_map(sub=subject_text(bytes(15)))),
        cbor2.dumps(claims_map(sub=CLAIMS.subject)),  # bstr instead of text
        cbor2.dumps(claims_map(cti=bytes(7))),
        cbor2.dumps(claims_map(status=[4, 1])),  # unknown colour
        cbor2.dumps(claims_map(status=[1, -1])),
        cbor2.dumps(claims_map(status=[1])),
        cbor2.dumps(claims_map(status=[1, 2, 3])),
        cbor2.dumps(claims_map(status=[True, 2])),
        cbor2.dumps(claims_map(exp=True)),
        cbor2.dumps(claims_map(iat=1.5)),
        cbor2.dumps(claims_map(iss=b"passcode")),
        cbor2.dumps(claims_map(exp=None)),
        cbor2.dumps(claims_map(status=None)),
        cbor2.dumps(claims_map(), canonical=True) + b"\x00",  # trailing bytes
        cbor2.dumps([claims_map()]),
        b"",
        b"\xff",
    ],
)
def test_ill_formed_signed_payload_is_malformed(payload: bytes) -> None:
    """A correctly signed payload that is not a well-typed claims map is MALFORMED."""
    assert reason_of(hand_made(payload=payload)) is Reason.MALFORMED


def test_unknown_claims_are_ignored() -> None:
    """Extra claims (CWT convention) do not invalidate an otherwise good pass."""
    payload = cbor2.dumps({**claims_map(), 3: "aud", -70002: "future"})
    assert verify(hand_made(payload=payload)) == CLAIMS


def _envelope_cases() -> list[tuple[str, bytes]]:
    protected, _, payload, signature = cbor2.loads(RAW).value
    untagged = cbor2.dumps([protected, {}, payload, signature])
    # The protected bstr (13 bytes) re-headed in the long form 0x58 0x0D: same value,
    # same signature, but a second spelling of the pass.
    long_head = RAW[:2] + b"\x58" + bytes((RAW[2] - 0x40,)) + RAW[3:]
    return [
        ("untagged", untagged),
        ("tag 17", cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, signature]))),
        (
            "unprotected kid",
            cbor2.dumps(cbor2.CBORTag(18, [protected, {4: KID}, payload, signature])),
        ),
        ("unprotected list", cbor2.dumps(cbor2.CBORTag(18, [protected, [], payload, signature]))),
        ("three items", cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload]))),
        ("five items", cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature, b""]))),
        ("trailing byte", RAW + b"\x00"),
        ("truncated", RAW[:-1]),
        ("empty", b""),
        ("non-canonical bstr head", long_head),
    ]


@pytest.mark.parametrize(("name", "raw"), _envelope_cases(), ids=lambda v: str(v)[:20])
def test_bad_envelope_is_malformed(name: str, raw: bytes) -> None:
    """Anything but the canonical tag-18 four-item layout with nothing after it is MALFORMED."""
    assert reason_of(with_raw(raw)) is Reason.MALFORMED, name


def test_non_canonical_base45_of_a_valid_pass_is_malformed() -> None:
    """A triple spelt 65536 too high (which a lax decoder would wrap) is MALFORMED."""
    body = TEXT[len(PREFIX) :]
    for start in range(0, len(body) - 2, 3):
        c, d, e = (B45_ALPHABET.index(ch) for ch in body[start : start + 3])
        value = c + 45 * d + 2025 * e + 65536
        if value < 45**3:
            e, rest = divmod(value, 2025)
            d, c = divmod(rest, 45)
            respelt = B45_ALPHABET[c] + B45_ALPHABET[d] + B45_ALPHABET[e]
            break
    else:  # pragma: no cover - a fixed pass always has small triples
        pytest.fail("no triple to respell")
    forged = PREFIX + body[:start] + respelt + body[start + 3 :]
    assert forged != TEXT
    assert reason_of(forged) is Reason.MALFORMED


def test_overlong_input_is_malformed_without_decoding() -> None:
    """Text over the 1024-character bound is MALFORMED, even if it would decode."""
    long_text = PREFIX + b45encode(RAW + bytes(600))
    assert len(long_text) > 1024
    assert reason_of(long_text) is Reason.MALFORMED


@pytest.mark.parametrize(
    "bad",
    [
        dataclasses.replace(CLAIMS, subject=bytes(15)),
        dataclasses.replace(CLAIMS, token_id=bytes(7)),
        dataclasses.replace(CLAIMS, version=-1),
    ],
)
def test_sign_pass_refuses_claims_verify_would_reject(bad: PassClaims) -> None:
    """The signer never produces a pass the verifier would call MALFORMED."""
    with pytest.raises(ValueError, match="must"):
        sign_pass(bad, KEY, KID)


def test_sign_pass_refuses_a_short_kid() -> None:
    """A kid that is not 8 bytes is a wiring error, refused at signing time."""
    with pytest.raises(ValueError, match="kid"):
        sign_pass(CLAIMS, KEY, KID[:7])


# --- properties: tampering and garbage ---------------------------------------------------------


@given(position=st.integers(0, len(RAW) - 1), delta=st.integers(1, 255))
@PROPERTY
def test_any_single_byte_change_is_rejected(position: int, delta: int) -> None:
    """Changing any one byte of the COSE message never yields an accepted pass."""
    tampered = bytearray(RAW)
    tampered[position] = (tampered[position] + delta) % 256
    assert reason_of(with_raw(bytes(tampered))) in REJECTED_EDIT


def test_every_single_bit_flip_is_rejected() -> None:
    """Exhaustively: each of the message's bits, flipped alone, is rejected."""
    for position in range(len(RAW)):
        for bit in range(8):
            tampered = bytearray(RAW)
            tampered[position] ^= 1 << bit
            assert reason_of(with_raw(bytes(tampered))) in REJECTED_EDIT, (position, bit)


@given(st.text(max_size=400))
@PROPERTY
def test_random_text_after_prefix_is_a_pass_error(text: str) -> None:
    """Arbitrary text after PC1: raises PassError, never another exception."""
    with pytest.raises(PassError):
        verify(PREFIX + text)


@given(st.text(alphabet=B45_ALPHABET, max_size=400))
@PROPERTY
def test_random_base45_after_prefix_is_a_pass_error(text: str) -> None:
    """Arbitrary base45-alphabet text after PC1: raises PassError, never another exception."""
    with pytest.raises(PassError):
        verify(PREFIX + text)


@given(st.binary(max_size=600))
@PROPERTY
def test_random_bytes_as_base45_are_a_pass_error(data: bytes) -> None:
    """Arbitrary bytes, validly base45-encoded after PC1:, raise PassError only."""
    with pytest.raises(PassError):
        verify(PREFIX + b45encode(data))


CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.binary(max_size=20)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-10, 10) | st.text(max_size=3), inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.integers(0, 300), inner)
    ),
    max_leaves=12,
)


@given(st.lists(CBOR_VALUES, max_size=5), st.integers(0, 30))
@PROPERTY
def test_random_cbor_in_a_tag_is_a_pass_error(items: list[Any], tag: int) -> None:
    """Random CBOR structures (tagged like a COSE message or not) raise PassError only."""
    try:
        raw = cbor2.dumps(cbor2.CBORTag(tag, items))
    except Exception:  # some random tag contents cannot be encoded: not our concern
        return
    with pytest.raises(PassError):
        verify(with_raw(raw))


@given(
    st.fixed_dictionaries(
        {},
        optional={
            1: CBOR_VALUES,
            2: CBOR_VALUES | st.just(subject_text(bytes(16))),
            4: CBOR_VALUES,
            6: CBOR_VALUES,
            7: CBOR_VALUES,
            -70001: CBOR_VALUES | st.lists(st.integers(-2, 4), max_size=3),
        },
    )
)
@PROPERTY
def test_random_signed_payload_never_leaks_other_exceptions(claims: dict[int, Any]) -> None:
    """Correctly signed but random claims maps either verify or are MALFORMED, nothing else."""
    try:
        payload = cbor2.dumps(claims)
    except Exception:  # unencodable random tag contents
        return
    try:
        verify(hand_made(payload=payload), leeway=2**80)
    except PassError as exc:
        reason = exc.reason
    else:
        return
    assert reason is Reason.MALFORMED


@given(st.text(max_size=300).filter(lambda t: not t.startswith(PREFIX)))
@PROPERTY
def test_garbage_without_prefix_is_unsupported(text: str) -> None:
    """Anything not starting with PC1: is UNSUPPORTED, whatever it contains."""
    assert reason_of(text) is Reason.UNSUPPORTED


# --- QR fitness ---------------------------------------------------------------------------------


def qr_for(text: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    return qr


@pytest.mark.parametrize("timestamp", [2**32 - 61, 2**32, 2**40])
def test_worst_case_pass_is_alphanumeric_qr_version_9_or_less(timestamp: int) -> None:
    """Even the largest realistic pass stays in QR alphanumeric mode, level M, version <= 9."""
    worst = PassClaims(
        issuer="passcode",
        subject=b"\xff" * 16,
        issued_at=timestamp,
        expires_at=timestamp + 60,
        token_id=b"\xff" * 16,
        color=Color.RED,
        version=2**31 - 1,
    )
    text = sign_pass(worst, KEY, KID)
    assert set(text) <= set(B45_ALPHABET)
    qr = qr_for(text)
    assert [d.mode for d in qr.data_list] == [qrcode.util.MODE_ALPHA_NUM]
    assert qr.version <= 9, (len(text), qr.version)
    assert verify_pass(text, KEYS, now=timestamp, leeway=0) == worst


def test_typical_pass_is_alphanumeric() -> None:
    """The everyday pass uses only QR alphanumeric characters and renders in that mode."""
    assert set(TEXT) <= set(B45_ALPHABET)
    assert [d.mode for d in qr_for(TEXT).data_list] == [qrcode.util.MODE_ALPHA_NUM]
