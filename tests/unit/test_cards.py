"""Printed cards (纸质码), the pure parts: the card claim in the pass format, the lifetime rule,
the PNG and the printable sheet."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

import cbor2
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from passcode.domain.cardsheet import MAX_DAYS, card_days, render_card_png, render_sheet_svg
from passcode.domain.masking import mask_name
from passcode.domain.model import ClaimKey, Color, Reason
from passcode.domain.passfmt import (
    PREFIX,
    PassClaims,
    PassError,
    b45decode,
    b45encode,
    kid_of,
    sign_pass,
    subject_text,
    verify_pass,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = kid_of(KEY.public_key())
KEYS = {KID: KEY.public_key()}
NOW = 1_760_000_000
SERIAL = bytes(range(200, 216))
PASS = PassClaims(
    issuer="passcode",
    subject=bytes(range(16)),
    issued_at=NOW,
    expires_at=NOW + 60,
    token_id=bytes(range(100, 116)),
    color=Color.YELLOW,
    version=7,
)
CARD = dataclasses.replace(PASS, expires_at=NOW + 180 * 86_400, card=SERIAL)
# The test vector of docs/pass-format.md: a phone's pass, byte for byte as before cards.
DOC_VECTOR = (
    "PC1:RRQT 9P60GO0$+AWKB3UAR098CK:D9080E9EZQEUPC6VC0E0AB81Y8JC8GCAYH8$OC/M873EDS8$46MT8FN0Z"
    "BD09FWY0ZBDU7FR-06VCP.C:8DIKD$VDB/DU9E4LE/E73602AEOB027BL6OP94S3N$FIH-5ATQ5O4NEV0FUTMEYUF"
    "A66Q5UOJE00179F116%5GHVGA7I  IP5W%ZRQZGQMMQS8OHM/RF: U189T.PSJ5"
)


def signed_payload(claims: dict[int, object]) -> str:
    """A properly signed pass around a hand-made claims map, to reach the claim checks."""
    protected = cbor2.dumps({1: -8, 4: KID}, canonical=True)
    payload = cbor2.dumps(claims, canonical=True)
    signature = KEY.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    return PREFIX + b45encode(message)


def claims_map(extra: dict[int, object]) -> dict[int, object]:
    return {
        1: "passcode",
        2: subject_text(PASS.subject),
        6: NOW,
        4: NOW + 60,
        7: PASS.token_id,
        -70001: [Color.YELLOW.wire, 7],
        **extra,
    }


def test_a_phone_pass_keeps_the_documented_bytes() -> None:
    """Without a card serial the signer writes exactly the documented test vector: the card
    claim changed nothing for terminals and third parties reading ordinary passes."""
    assert sign_pass(PASS, KEY, KID) == DOC_VECTOR
    assert verify_pass(DOC_VECTOR, KEYS, now=NOW, leeway=30).card is None


def test_the_card_claim_round_trips() -> None:
    """A card's serial is signed into claim -70010 and read back; the rest is unchanged."""
    text = sign_pass(CARD, KEY, KID)
    assert verify_pass(text, KEYS, now=NOW + 100 * 86_400, leeway=30) == CARD
    payload = cbor2.loads(cbor2.loads(b45decode(text[len(PREFIX) :])).value[2])
    assert payload[ClaimKey.CARD] == SERIAL == payload[-70010]


@pytest.mark.parametrize(
    "value",
    ["text serial", 12345, b"short", b"x" * 33, [SERIAL], None],
    ids=["text", "int", "7 bytes", "33 bytes", "array", "null"],
)
def test_a_bad_card_claim_is_malformed(value: object) -> None:
    """Present, the card claim must be 8 to 32 bytes; anything else (even CBOR null) is a
    malformed pass, never a phone's pass or an exception."""
    with pytest.raises(PassError) as info:
        verify_pass(signed_payload(claims_map({-70010: value})), KEYS, now=NOW, leeway=30)
    assert info.value.reason is Reason.MALFORMED


def test_the_signer_refuses_a_serial_the_verifier_would() -> None:
    """sign_pass refuses a too-short serial rather than print an unreadable card."""
    with pytest.raises(ValueError, match="card serial"):
        sign_pass(dataclasses.replace(CARD, card=b"1234567"), KEY, KID)


def test_lifetime_defaults_and_is_capped_at_a_year() -> None:
    """No days given: the default; 1 to 365 days accepted; 0, 366 or a bool refused."""
    assert card_days(None, default=180) == 180
    assert card_days(1, default=180) == 1
    assert card_days(MAX_DAYS, default=180) == 365
    for bad in (0, -1, 366, 10_000, True):
        with pytest.raises(ValueError, match="a card lives"):
            card_days(bad, default=180)
    with pytest.raises(ValueError, match="a card lives"):
        card_days(None, default=400)


def test_the_png_decodes_back_to_the_code() -> None:
    """The card PNG, read by an independent decoder (zxing-cpp), gives the exact code."""
    code = sign_pass(CARD, KEY, KID)
    image = Image.open(io.BytesIO(render_card_png(code)))
    assert image.format == "PNG"
    found = zxingcpp.read_barcodes(image.convert("L"))
    assert [r.text for r in found] == [code]


def test_the_sheet_shows_the_masked_name_and_dates_never_the_full_name() -> None:
    """The printable sheet carries the masked name, the issue and expiry dates, the serial and
    the bilingual line, and neither the full name nor anything else it was not given."""
    code = sign_pass(CARD, KEY, KID)
    full = "张小三"
    sheet = render_sheet_svg(
        code,
        holder=mask_name(full),
        serial=SERIAL,
        issued_at=datetime(2025, 10, 9, 8, 0, tzinfo=UTC),
        expires_at=datetime(2026, 4, 7, 8, 0, tzinfo=UTC),
    )
    assert "张*三" in sheet
    assert full not in sheet
    assert "小" not in sheet
    assert "2025-10-09" in sheet
    assert "2026-04-07" in sheet
    assert SERIAL.hex()[:4] in sheet
    assert "Health code card" in sheet
    assert "健康码" in sheet
    assert 'width="105mm"' in sheet
    assert 'height="148mm"' in sheet
    assert "#007a33" not in sheet  # black, not the colour at issue


def test_the_sheet_escapes_markup_in_the_name() -> None:
    """A name is text in the SVG, never markup (a worker's typo cannot break the sheet)."""
    sheet = render_sheet_svg(
        sign_pass(CARD, KEY, KID),
        holder="<b>&",
        serial=SERIAL,
        issued_at=datetime(2025, 1, 1, tzinfo=UTC),
        expires_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    assert "<b>" not in sheet
    assert "&lt;b&gt;&amp;" in sheet
