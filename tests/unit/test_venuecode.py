"""The venue code (场所码) format and its poster: round trip, strict parsing, tampered and
foreign-key codes, the window, and posters whose QR decodes back to the code."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import cbor2
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from passcode.domain import poster
from passcode.domain.model import ClaimKey, Color, Reason
from passcode.domain.passfmt import (
    PassClaims,
    b45decode,
    b45encode,
    kid_of,
    sign_envelope,
    sign_pass,
)
from passcode.domain.venuecode import (
    DAY,
    MAX_DAYS,
    MAX_TEXT,
    PREFIX,
    VenueClaim,
    VenueClaims,
    VenueCodeError,
    authenticate_venue,
    check_window,
    sign_venue,
    verify_venue,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
KID = kid_of(KEY.public_key())
KEYS = {KID: KEY.public_key()}
T0 = 1_800_000_000
CLAIMS = VenueClaims("passcode", "Corner Shop 街角小店", 3, T0, T0 + 365 * DAY)


def refusal(text: str, keys: Any = KEYS) -> Reason:
    with pytest.raises(VenueCodeError) as caught:
        authenticate_venue(text, keys)
    return caught.value.reason


def with_payload(body: Any) -> str:
    """A correctly signed code around an arbitrary payload (reaches the claims parser)."""
    return PREFIX + b45encode(sign_envelope(cbor2.dumps(body, canonical=True), KEY, KID))


def good_body(**changes: Any) -> dict[int, Any]:
    body: dict[int, Any] = {
        ClaimKey.ISS: "passcode",
        ClaimKey.IAT: T0,
        ClaimKey.EXP: T0 + DAY,
        VenueClaim.PLACE: "Shop",
        VenueClaim.ISSUE: 1,
    }
    for key, value in changes.items():
        claim = {"iss": ClaimKey.ISS, "iat": ClaimKey.IAT, "exp": ClaimKey.EXP}.get(key)
        claim = claim or {"place": VenueClaim.PLACE, "issue": VenueClaim.ISSUE}[key]
        if value is None:
            del body[claim]
        else:
            body[claim] = value
    return body


def test_a_signed_code_comes_back_with_its_claims_and_kid_and_is_alphanumeric() -> None:
    """Round trip: the claims and kid come back unchanged; the text is PP1: + QR-alphanumeric
    characters well under the size cap, and signing is deterministic (Ed25519)."""
    text = sign_venue(CLAIMS, KEY, KID)
    assert text.startswith("PP1:")
    assert len(text) < MAX_TEXT // 2
    assert set(text[4:]) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert authenticate_venue(text, KEYS, issuer="passcode") == (CLAIMS, KID)
    assert verify_venue(text, KEYS, now=T0 + 10, leeway=0) == CLAIMS
    assert sign_venue(CLAIMS, KEY, KID) == text


def test_a_code_signed_by_a_key_not_in_the_set_is_unknown_key() -> None:
    """A forger's own key: unknown_key; the right kid over another key's signature:
    bad_signature."""
    forger = Ed25519PrivateKey.generate()
    assert refusal(sign_venue(CLAIMS, forger, kid_of(forger.public_key()))) is Reason.UNKNOWN_KEY
    assert refusal(sign_venue(CLAIMS, forger, KID)) is Reason.BAD_SIGNATURE


def test_every_single_bit_flip_of_a_genuine_code_is_refused() -> None:
    """No flipped bit anywhere in the COSE bytes yields an accepted code."""
    raw = b45decode(sign_venue(CLAIMS, KEY, KID)[4:])
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            with pytest.raises(VenueCodeError):
                authenticate_venue(PREFIX + b45encode(bytes(flipped)), KEYS)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", Reason.UNSUPPORTED),
        ("PC1:ABC", Reason.UNSUPPORTED),
        ("pp1:ABC", Reason.UNSUPPORTED),
        ("PP1:", Reason.MALFORMED),
        ("PP1:GGW", Reason.MALFORMED),  # a Base45 group above 65535
        ("PP1:abc", Reason.MALFORMED),
        ("PP1:" + "0" * (MAX_TEXT - 3), Reason.MALFORMED),  # over the cap: not decoded
        ("PP1:" + b45encode(b"\xd2\x84\x40\xa0\x40\x40"), Reason.MALFORMED),  # no header
    ],
)
def test_texts_that_are_not_venue_codes_are_refused_with_their_reason(
    text: str, reason: Reason
) -> None:
    """Other prefixes are unsupported; damaged Base45, over-long texts and broken envelopes are
    malformed."""
    assert refusal(text) is reason


def test_a_pass_is_not_a_venue_code_even_with_its_prefix_swapped() -> None:
    """Our own pass, signed by the same key, relabelled PP1: is malformed (its claims are not
    a venue code's), so one kind of code never passes for the other."""
    claims = PassClaims("passcode", bytes(16), T0, T0 + 60, b"\x01" * 8, Color.GREEN, 1)
    text = sign_pass(claims, KEY, KID)
    assert refusal("PP1:" + text[4:]) is Reason.MALFORMED


@pytest.mark.parametrize(
    "changes",
    [
        {"place": None},
        {"place": ""},
        {"place": b"Shop"},
        {"place": "x" * 801},
        {"issue": None},
        {"issue": 0},
        {"issue": True},
        {"issue": 2**53 + 1},
        {"issue": 1.0},
        {"iss": None},
        {"iss": ""},
        {"iat": "1800000000"},
        {"exp": T0 - 1},  # ends before it starts
        {"exp": T0 + (MAX_DAYS + 1) * DAY},  # lives past the card keys' window
    ],
)
def test_authenticated_claims_are_strictly_typed(changes: dict[str, Any]) -> None:
    """Claims that are missing, mistyped (bool for int, bytes for text, float), out of range, or
    whose lifetime exceeds a year are malformed even under a genuine signature."""
    assert refusal(with_payload(good_body(**changes))) is Reason.MALFORMED


def test_a_payload_that_is_not_a_map_or_has_trailing_bytes_is_malformed() -> None:
    """A list payload, and a payload with bytes after its map, are malformed."""
    assert refusal(with_payload([1, 2])) is Reason.MALFORMED
    payload = cbor2.dumps(good_body(), canonical=True) + b"\x00"
    assert refusal(PREFIX + b45encode(sign_envelope(payload, KEY, KID))) is Reason.MALFORMED


def test_unknown_claims_are_ignored_and_another_issuer_is_refused_when_named() -> None:
    """An extra claim does not change the reading (CWT convention); issuer= refuses another."""
    text = with_payload({**good_body(), 99: "extra"})
    claims, _ = authenticate_venue(text, KEYS)
    assert (claims.place, claims.issue) == ("Shop", 1)
    with pytest.raises(VenueCodeError) as caught:
        authenticate_venue(text, KEYS, issuer="someone-else")
    assert caught.value.reason is Reason.MALFORMED


def test_the_window_refuses_expired_and_future_codes_within_the_leeway() -> None:
    """Expired past exp + leeway, not yet valid before iat - leeway, accepted at the edges."""
    check_window(CLAIMS, now=CLAIMS.expires_at + 30, leeway=30)
    check_window(CLAIMS, now=CLAIMS.issued_at - 30, leeway=30)
    for now, reason in (
        (CLAIMS.expires_at + 31, Reason.EXPIRED),
        (CLAIMS.issued_at - 31, Reason.NOT_YET_VALID),
    ):
        with pytest.raises(VenueCodeError) as caught:
            check_window(CLAIMS, now=now, leeway=30)
        assert caught.value.reason is reason


def test_signing_refuses_claims_the_decoder_would_refuse() -> None:
    """A bad kid, an empty place, issue 0 or a lifetime over a year are ValueErrors at signing."""
    with pytest.raises(ValueError, match="kid"):
        sign_venue(CLAIMS, KEY, b"short")
    for bad in (
        VenueClaims("passcode", "", 1, T0, T0 + DAY),
        VenueClaims("passcode", "Shop", 0, T0, T0 + DAY),
        VenueClaims("passcode", "Shop", 1, T0, T0 + (MAX_DAYS + 1) * DAY),
    ):
        with pytest.raises(ValueError, match=r"must be|lives"):
            sign_venue(bad, KEY, KID)


@pytest.mark.parametrize("font", [None, "cjk"])
def test_the_poster_png_decodes_back_to_the_code(font: str | None) -> None:
    """The A4 PNG's QR reads back (zxing-cpp) to the exact venue code, with a CJK font and
    without one (then only the Latin lines are drawn, the QR is always there)."""
    text = sign_venue(CLAIMS, KEY, KID)
    face = None
    if font is not None:
        from passcode.store.venues import poster_font  # noqa: PLC0415  # reads a system file

        face = poster_font()
        if face is None:
            pytest.skip("no CJK font installed (fonts-noto-cjk or fonts-wqy-microhei)")
    shown = poster.PosterText("街角小店 Corner Shop", 3, datetime.fromtimestamp(T0, UTC))
    png = poster.render_png(text, shown, font=face)
    image = Image.open(io.BytesIO(png))
    assert image.size == (poster.WIDTH_PX, poster.HEIGHT_PX)
    assert [found.text for found in zxingcpp.read_barcodes(image)] == [text]


def test_the_poster_svg_names_the_place_escaped_with_both_languages() -> None:
    """The SVG is A4, carries the place's name XML-escaped, the instructions in Chinese and
    English, the issue and the expiry date."""
    text = sign_venue(CLAIMS, KEY, KID)
    shown = poster.PosterText("<Tea & Co> 茶馆", 4, datetime(2027, 5, 1, tzinfo=UTC))
    svg = poster.render_svg(text, shown)
    assert 'width="210mm" height="297mm"' in svg
    assert "&lt;Tea &amp; Co&gt; 茶馆" in svg
    assert "<Tea" not in svg
    for zh, en in poster.INSTRUCTIONS:
        assert zh in svg
        assert en in svg
    assert "Issue 4" in svg
    assert "2027-05-01" in svg
