"""Laboratory test results uploaded as CSV (issue 5): the file checked row by row, no I/O.

The file is UTF-8; one leading byte-order mark (spreadsheet programs write it) is ignored. Lines
end in LF or CRLF. Line 1 is the header ``user_id,result,tested_at``. Every other non-blank line
is one record: no field may hold a line break, so each physical line is parsed on its own and a
stray quote spoils only its line (it cannot swallow the rest of the file) and every error names
the line as an editor shows it (the header is line 1). Blank lines are skipped.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from passcode.domain import fields as kinds

ACTION = "test_results.upload"  # the audit action of an upload (and of its authorization)
HEADER = ("user_id", "result", "tested_at")
HEADER_TEXT = ",".join(HEADER)
MAX_AGE = timedelta(days=366)
RESULTS = {"positive": True, "negative": False}
_BOM = "\ufeff"
_FIELD = r'(?:"(?:[^"]|"")*"|[^",]*)'  # quoted (quotes doubled inside), or without quotes
_RFC4180_LINE = re.compile(f"{_FIELD}(?:,{_FIELD})*")
# What a bad value may look like to be quoted back in an error: a near-miss time (RFC 3339
# characters in a date-time shape). The character set alone would admit an all-digit ID number.
_TIME_LIKE = re.compile(
    r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}(:[0-9]{1,2}){0,2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)


class UploadRejected(ValueError):
    """The file as a whole cannot be read (not UTF-8, no header): nothing is applied."""


class TooManyRows(UploadRejected):
    """More records than one upload may hold: nothing is applied."""


@dataclass(frozen=True, slots=True)
class LabResult:
    """One good record."""

    line: int
    user_id: str
    positive: bool
    tested_at: datetime


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    error: str


@dataclass(slots=True)
class ParsedUpload:
    """``rows`` records (non-blank lines after the header): ``good`` plus ``errors``."""

    rows: int = 0
    good: list[LabResult] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def exposure_source(tested_at: datetime) -> str:
    """The exposure a positive result creates is keyed by this: one per subject and test time."""
    utc = tested_at.astimezone(UTC).replace(tzinfo=None)
    return f"test:{utc.isoformat()}Z"


def parse_upload(raw: bytes, *, now: datetime, skew: timedelta, max_rows: int) -> ParsedUpload:
    """The records of a CSV upload, each good or with its line's error.

    Raises :class:`UploadRejected` for a body that is not UTF-8 or lacks the header line and
    :class:`TooManyRows` above ``max_rows`` records.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = raw.count(b"\n", 0, exc.start) + 1
        raise UploadRejected(f"the body is not UTF-8 (line {at}, byte {exc.start})") from exc
    lines = text.removeprefix(_BOM).split("\n")
    header = _fields(lines[0].removesuffix("\r"))
    if header is None or tuple(f.strip() for f in header) != HEADER:
        raise UploadRejected(f"line 1 must be the header {HEADER_TEXT}")
    records = sum(1 for line in lines[1:] if line not in {"", "\r"})
    if records > max_rows:
        raise TooManyRows(f"the file has {records} rows; an upload holds at most {max_rows}")
    parsed = ParsedUpload(rows=records)
    earliest, latest = now - MAX_AGE, now + skew
    for number, physical in enumerate(lines[1:], start=2):
        text_line = physical.removesuffix("\r")  # CRLF files: the same line without its CR
        if not text_line:
            continue
        result = _record(number, text_line, earliest, latest)
        if isinstance(result, RowError):
            parsed.errors.append(result)
        else:
            parsed.good.append(result)
    return parsed


def _fields(line: str) -> list[str] | None:
    """The line's fields (RFC 4180 quoting, strict), or None when its quoting is broken.

    Python's reader takes a quote inside an unquoted field as text (``b",negative,…`` is user
    ``b"``), which is how the second half of a field with a line break in it (a spreadsheet
    writes one quoted across two lines) would pass for a record of its own; RFC 4180 allows a
    quote only in a quoted field, and so does this."""
    if not _RFC4180_LINE.fullmatch(line):
        return None
    try:
        return next(csv.reader((line,), strict=True), [])
    except csv.Error:
        return None


def _record(number: int, line: str, earliest: datetime, latest: datetime) -> LabResult | RowError:
    fields = _fields(line)
    if fields is None:
        if "\r" in line:
            return RowError(number, "a carriage return inside the line")
        return RowError(number, "broken quoting (a quote must close its field before a comma)")
    if len(fields) != len(HEADER):
        return RowError(number, f"expected 3 fields ({HEADER_TEXT}), found {len(fields)}")
    user_id, result, tested = fields[0], fields[1].strip().lower(), fields[2].strip()
    try:
        user_id = kinds.user_id(user_id)
    except kinds.FieldError as exc:
        return RowError(number, f"user_id {exc}")
    if result not in RESULTS:
        return RowError(number, f"result must be positive or negative{_shown(fields[1])}")
    try:
        tested_at = kinds.parse_time(tested)
    except kinds.OutOfRange as exc:
        return RowError(number, f"tested_at {exc}")
    except kinds.FieldError:  # e.g. February 30th, hour 24, no offset
        return RowError(
            number, f"tested_at must be an RFC 3339 time with an offset{_shown(tested)}"
        )
    if tested_at > latest:
        return RowError(number, "tested_at is in the future")
    if tested_at < earliest:
        return RowError(number, "tested_at is more than a year ago")
    return LabResult(number, user_id, RESULTS[result], tested_at)


def _shown(value: str) -> str:
    """The end of an error about a bad result or time: the value quoted back only when it is
    a result word or a near-miss time. Anything else may be a user id in the wrong column (or
    other personal data), and the response and the operator's tools must never repeat one."""
    value = value.strip()
    if not value:
        return ", not an empty field"
    if value.lower() in RESULTS or (len(value) <= 40 and _TIME_LIKE.fullmatch(value)):
        return f", not {value!r}"
    return " (the value given is not repeated here)"
