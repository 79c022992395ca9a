"""The rules of passcode/domain/fields.py: one per kind of value (issue 11)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from passcode.domain import fields
from passcode.domain.fields import FieldError, OutOfRange

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=28)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=UTC)),
        ("2000-01-01T08:00:00+08:00", datetime(2000, 1, 1, tzinfo=UTC)),
        ("2199-12-31T23:59:59.999999Z", datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-06-01t12:00:00.123456789z", datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-06-01 20:00:00+08:00", datetime(2026, 6, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_a_time_in_range_is_read_as_its_instant_in_utc(text: str, instant: datetime) -> None:
    """The first and last instants of the range, lower-case t/z, nanoseconds (cut to
    microseconds), a space for T and any offset: read as the instant, in UTC."""
    parsed = fields.parse_time(text)
    assert parsed == instant
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T07:59:59+08:00",
        "2200-01-01T00:00:00Z",
        "2199-12-31T23:59:59-00:01",
    ],
)
def test_a_time_out_of_range_is_refused_as_such(text: str) -> None:
    """Beyond what UTC can hold (year 9999 at -23:59, year 1 at +23:59) or outside 2000 to
    2199 by one instant: refused as out of range (never an OverflowError)."""
    with pytest.raises(OutOfRange, match=r"must be from 2000-01-01 to 2199-12-31 \(UTC\)"):
        fields.parse_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-01T12:00:00",
        "2026-06-01",
        "2026-02-30T00:00:00Z",
        "2026-06-01T24:00:00Z",
        "2026-06-01T12:00:60Z",
        "٢٠٢٦-06-01T12:00:00Z",
        "2026-06-01T12:00:00Z\n",
        " 2026-06-01T12:00:00Z",
        "2026-06-01T12:00:00+0800",
        "2026-06-01T12:00:00.Z",
        "x" * 41,
    ],
)
def test_a_malformed_time_is_refused(text: str) -> None:
    """No offset, no time, no such day or hour, a leap second, other scripts' digits, a
    trailing newline or leading space, an offset without colon: not RFC 3339 with an offset."""
    with pytest.raises(FieldError, match="must be an RFC 3339 time with an offset"):
        fields.parse_time(text)


@pytest.mark.parametrize(
    ("delta", "ok"),
    [
        (-RETENTION, True),
        (-RETENTION - timedelta(microseconds=1), False),
        (fields.TERMINAL_AHEAD, True),
        (fields.TERMINAL_AHEAD + timedelta(microseconds=1), False),
        (timedelta(0), True),
    ],
)
def test_a_terminal_time_keeps_the_window_around_the_server_clock(
    delta: timedelta, ok: bool
) -> None:
    """Exactly the retention back and exactly an hour ahead are inside; a microsecond
    beyond either is refused, with the window in the message."""
    text = (NOW + delta).isoformat()
    if ok:
        assert fields.terminal_time(text, now=NOW, back=RETENTION) == NOW + delta
    else:
        with pytest.raises(FieldError, match="within 28 days before and 1 hour after"):
            fields.terminal_time(text, now=NOW, back=RETENTION)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Gate\x00A", "control characters"),
        ("Gate\r\nA", "control characters"),
        ("Gate A\n", "control characters"),
        ("\tGate A", "control characters"),
        ("Gate\x7fA", "control characters"),
        ("Gate\x85A", "control characters"),
        ("Gate\u2028A", "control characters"),
        ("Gate\u2029A", "control characters"),
        ("Gate\u202eA", "invisible format characters"),
        ("\u2066Gate\u2069", "invisible format characters"),
        ("Gate\u200fA", "invisible format characters"),
        ("Gate\u061cA", "invisible format characters"),
        ("Gate\u200bA", "invisible format characters"),
        ("\ufeffGate", "invisible format characters"),
        ("Gate\ud800A", "lone surrogates"),
        ("", "must not be blank"),
        ("   ", "must not be blank"),
        ("\u3000\u00a0", "must not be blank"),
        ("p" * 201, "at most 200 characters"),
    ],
)
def test_a_place_with_a_refused_character_or_nothing_in_it_is_refused(
    value: str, message: str
) -> None:
    """Controls (C0, DEL, C1), line and paragraph separators, bidi and other invisible format
    characters and lone surrogates anywhere, blank values and 201 characters are refused."""
    with pytest.raises(FieldError, match=message):
        fields.place(value)


def test_a_place_keeps_its_text_trimmed() -> None:
    """Surrounding space (also ideographic or no-break) is trimmed; inner spaces, CJK,
    emoji with joiners and Persian with its zero-width non-joiner are text and kept."""
    assert fields.place("  北京站\u3000东口 ") == "北京站\u3000东口"
    assert fields.place("\u00a0Gate A\u3000") == "Gate A"
    assert fields.place("👩\u200d🔧 workshop") == "👩\u200d🔧 workshop"
    assert fields.place("می\u200cخانه") == "می\u200cخانه"
    assert fields.place("p" * 200) == "p" * 200


@hypothesis_settings(max_examples=1000, derandomize=True, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from("a \t\n\r\x00\x85\u2028\u202e\u200b\u200c\u200d\u3000\ufeff\ud800")
        | st.characters(),
        max_size=30,
    )
)
def test_a_line_is_refused_or_comes_back_trimmed_and_clean(value: str) -> None:
    """For any text: the rule either refuses it or returns it trimmed, non-empty, with no
    control, separator or format character other than the two joiners."""
    try:
        text = fields.line(value, max_length=200)
    except FieldError:
        return
    assert text == value.strip()
    assert text
    for char in text:
        category = unicodedata.category(char)
        assert category not in {"Cc", "Cs", "Zl", "Zp"}, repr(value)
        assert category != "Cf" or char in "\u200c\u200d", repr(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("u" * 129, "is longer than 128 characters"),
        (" user", "leading or trailing white space"),
        ("user\n", "control characters"),
        ("us\u202eer", "control characters"),
        ("us\u3000er", "control characters"),
    ],
)
def test_a_user_id_is_taken_exactly_or_refused(value: str, message: str) -> None:
    """A user id is hashed as given, so it is never trimmed: surrounding space, controls,
    bidi and other non-printable characters are refused, as are empty and 129 characters."""
    with pytest.raises(FieldError, match=message):
        fields.user_id(value)
    assert fields.user_id("idp-user-8f3a@城市") == "idp-user-8f3a@城市"
