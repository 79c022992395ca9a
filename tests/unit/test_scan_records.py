"""The scan stream's record format carries a scan's kind, a foreign certificate's issuer and
the keyed hash of its id (issue 14), and our own pass's record is unchanged."""

from __future__ import annotations

import uuid

import pytest

from passcode.domain.model import Decision, Kind, Reason
from passcode.domain.verdict import Verdict
from passcode.store.scans import decode_entry, encode_record

DENY = Verdict(Decision.DENY, Reason.NOT_ACCEPTED, None)


def _record(**kw: object) -> str:
    base: dict[str, object] = {
        "scan_id": str(uuid.uuid4()),
        "at_ms": 1_780_000_000_000,
        "terminal_time": None,
        "terminal_id": str(uuid.uuid4()),
        "subject": None,
        "pass_version": 0,
        "verdict": DENY,
    }
    base.update(kw)
    return encode_record(**base)  # type: ignore[arg-type]


def test_our_own_pass_keeps_the_nine_field_record_and_is_stored_as_passcode() -> None:
    text = _record(verdict=Verdict(Decision.INVALID, Reason.MALFORMED, None))
    assert text.count("|") == 8
    row = decode_entry([b"r", text.encode()])
    assert row[10:] == ("passcode", None, None)


@pytest.mark.parametrize(
    ("issuer", "kind"),
    [("DE", Kind.EU_DCC), ("https://x.example/a|b%7C", Kind.SHC), ("", Kind.CARD)],
)
def test_a_foreign_scan_round_trips_its_kind_issuer_and_hash(issuer: str, kind: Kind) -> None:
    """An issuer URL holding the separator or an escape survives as it was."""
    text = _record(kind=kind, issuer=issuer, cert_hash=b"\x01\xfe" * 8)
    row = decode_entry([b"r", text.encode()])
    assert row[10:] == (kind.value, issuer or None, b"\x01\xfe" * 8)
    assert row[6:9] == ("deny", "not_accepted", None)


def test_a_text_of_no_known_kind_is_stored_with_no_kind() -> None:
    text = _record(kind=None, verdict=Verdict(Decision.INVALID, Reason.UNSUPPORTED, None))
    assert decode_entry([b"r", text.encode()])[10] is None


def test_an_unknown_kind_in_a_record_makes_it_unreadable() -> None:
    text = _record(kind=Kind.SHC).replace("|shc|", "|xyz|")
    with pytest.raises(ValueError, match="unknown kind"):
        decode_entry([b"r", text.encode()])
