"""One rule per kind of value a request may carry (issue 11): every edge calls these.

Times: an RFC 3339 text with an explicit offset, read as an instant in UTC, from 2000-01-01
(inclusive) to 2200-01-01 (exclusive). Nothing this service records predates 2000, and up to
2199 leaves thousands of years of room for the arithmetic the rules and queries do on a time
(a window of days, an exposure of a year) before Python's ``datetime`` (year 9999) or
PostgreSQL's ``timestamptz`` (year 294276) overflows: out-of-range values are a 400 here, never
an ``OverflowError`` or a ``DataError`` further in. A terminal's own clock (``scanned_at``) is
also held to a window around the server's time: :func:`terminal_time`.

Text: a *line* of text (a place name, a note, a region, an actor's name) has no control
characters (C0, DEL, C1: NUL, CR, LF, tab…), no line or paragraph separators, no invisible
format characters (the bidirectional controls U+202A–U+202E and U+2066–U+2069, U+200E/U+200F,
zero-width space, BOM…; the zero-width joiner and non-joiner stay, they spell words in
Persian and Indic scripts and emoji sequences) and no lone surrogates, anywhere; its
surrounding white space is trimmed, and it must not be blank. An *identifier* (a user id) is
never trimmed: it is hashed exactly as given, so white space around it is refused.

Pure: no I/O. A bad value raises :class:`FieldError` with the phrase that follows the field's
name in a message ("must not be blank"); the API turns it into a 400 naming the field.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import time
import unicodedata
from datetime import UTC, datetime, timedelta

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
MAX_TIME_TEXT = 40  # the longest RFC 3339 text the pattern admits is 35 characters

# RFC 3339 date-time with an explicit offset; ASCII digits only (``\d`` would admit other
# scripts' digits, which ``datetime.fromisoformat`` reads).
RFC3339 = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
DATETIME_PATTERN = f"^{RFC3339}$"  # for JSON Schema (draft 7 and 2020-12 read it alike)
_RFC3339 = re.compile(RFC3339)

# How far a terminal's clock may run ahead of the server's: the drift of a terminal without
# NTP (minutes, after weeks unsynchronised; refusing it would stop a gate), but not a clock set
# to local time and labelled UTC (hours: that is refused, and the operator sees it at once). How far back: the scan retention, the longest a terminal can
# have been offline with its scans still worth uploading (the log keeps no older ones).
TERMINAL_AHEAD = timedelta(hours=1)

MAX_PLACE = 200
MAX_NOTE = 500
MAX_REGION = 64
MAX_ACTOR = 200
MAX_USER_ID = 128  # as an ID token's ``sub`` (passcode.domain.identity)

_LINE_BREAKS = frozenset({"Cc", "Zl", "Zp"})  # C0/C1 controls (NUL, CR, LF, tab), U+2028/9
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ: part of the spelling, not formatting


class FieldError(ValueError):
    """A value its kind's rule refuses; ``str()`` is the phrase after the field's name."""


class OutOfRange(FieldError):
    """A well-formed time outside the documented range."""


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with an offset, as an aware datetime in UTC within the range."""
    if len(text) > MAX_TIME_TEXT or not _RFC3339.fullmatch(text):
        raise FieldError("must be an RFC 3339 time with an offset")
    try:
        # fromisoformat wants upper-case T and Z and reads at most microseconds.
        moment = datetime.fromisoformat(text.upper())
    except ValueError as exc:  # February 30th, hour 25, second 60
        raise FieldError("must be an RFC 3339 time with an offset") from exc
    return in_range(moment)


def rfc3339(moment: datetime | int | float) -> str:
    """A time as this service writes it (answers, the audit log): UTC, milliseconds truncated,
    ``Z``: ``2026-11-23T08:00:00.123Z`` (on every verify answer)."""
    if isinstance(moment, datetime):
        utc = moment.astimezone(UTC)
        return f"{_second(calendar.timegm(utc.timetuple()))}.{utc.microsecond // 1000:03d}Z"
    millis = math.floor(moment * 1000)
    return f"{_second(millis // 1000)}.{millis % 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """Formatting the same second for thousands of answers once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def in_range(moment: datetime) -> datetime:
    """``moment`` (aware) in UTC, if within the documented range."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # year 1 at +23:59, year 9999 at -23:59
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise OutOfRange("must be from 2000-01-01 to 2199-12-31 (UTC)")
    return utc


def terminal_time(
    text: str, *, now: datetime, back: timedelta, ahead: timedelta = TERMINAL_AHEAD
) -> datetime:
    """A terminal's clock reading: a time (:func:`parse_time`) within ``back`` before and
    ``ahead`` after the server's ``now``."""
    moment = parse_time(text)
    if not now - back <= moment <= now + ahead:
        raise FieldError(
            f"must be within {_span(back)} before and {_span(ahead)} after the server's time"
        )
    return moment


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _check_characters(value: str) -> None:
    """Refuse control, separator, invisible format characters and lone surrogates."""
    if value.isprintable():  # the common case, at C speed: none of them is printable
        return
    for char in value:
        category = unicodedata.category(char)
        if category in _LINE_BREAKS:
            raise FieldError("must not contain control characters")
        if category == "Cs":
            raise FieldError("must not contain lone surrogates")
        if category == "Cf" and char not in _JOINERS:
            raise FieldError(
                "must not contain invisible format characters (such as bidirectional controls)"
            )


def characters(value: str) -> str:
    """``value`` if it holds no refused character (blank allowed: a policy's literal)."""
    _check_characters(value)
    return value


def line(value: str, *, max_length: int) -> str:
    """A line of text: no refused character anywhere, trimmed, 1 to ``max_length`` long."""
    _check_characters(value)
    text = value.strip()
    if not text:
        raise FieldError("must not be blank")
    if len(text) > max_length:
        raise FieldError(f"must be at most {max_length} characters")
    return text


def place(value: str) -> str:
    """A place name, as terminals are registered, risk places marked, tracing asks for it."""
    return line(value, max_length=MAX_PLACE)


def note(value: str) -> str:
    """A free-text reason (a risk place's note)."""
    return line(value, max_length=MAX_NOTE)


def region(value: str) -> str:
    """A region a citizen declares having visited."""
    return line(value, max_length=MAX_REGION)


def actor(value: str) -> str:
    """An actor's name as the audit log records it (a filter of the audit log)."""
    return line(value, max_length=MAX_ACTOR)


def user_id(value: str) -> str:
    """The identity provider's user id: exactly as given, printable, no surrounding space."""
    if not value:
        raise FieldError("is empty")
    if len(value) > MAX_USER_ID:
        raise FieldError(f"is longer than {MAX_USER_ID} characters")
    if not value.isprintable() or value != value.strip():
        raise FieldError("holds control characters or leading or trailing white space")
    return value
