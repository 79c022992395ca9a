"""The test-result CSV parser (pure): what a file may look like, and what it may not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from passcode.domain.testresults import (
    LabResult,
    RowError,
    TooManyRows,
    UploadRejected,
    exposure_source,
    parse_upload,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=30)


def parse(text: str | bytes, max_rows: int = 100) -> tuple[int, list[LabResult], list[RowError]]:
    raw = text.encode() if isinstance(text, str) else text
    parsed = parse_upload(raw, now=NOW, skew=SKEW, max_rows=max_rows)
    return parsed.rows, parsed.good, parsed.errors


def test_spreadsheet_exports_are_read_bom_crlf_quotes_and_spaces() -> None:
    """A BOM, CRLF line ends, header names quoted or padded with spaces, quoted fields, upper-case
    results and lower-case ``t``/``z`` in times are all accepted; times keep their instant."""
    text = (
        '\ufeff"user_id", result ,tested_at\r\n'
        '"a,b",POSITIVE,2026-06-01t08:00:00.123456789z\r\n'
        "c, negative , 2026-06-01 16:00:00+08:00\r\n"
    )
    rows, good, errors = parse(text)
    assert (rows, errors) == (2, [])
    assert good == [
        LabResult(2, "a,b", True, datetime(2026, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        LabResult(3, "c", False, datetime(2026, 6, 1, 8, 0, tzinfo=UTC)),
    ]


def test_the_time_window_is_a_year_back_to_the_clock_skew_ahead() -> None:
    """Exactly at the skew ahead and a year back (366 days) are fine; a second beyond is not."""
    ahead = (NOW + SKEW).isoformat()
    late = (NOW + SKEW + timedelta(seconds=1)).isoformat()
    old = (NOW - timedelta(days=366)).isoformat()
    older = (NOW - timedelta(days=366, seconds=1)).isoformat()
    text = f"user_id,result,tested_at\na,positive,{ahead}\nb,positive,{late}\nc,negative,{old}\nd,negative,{older}\n"
    _, good, errors = parse(text)
    assert [g.user_id for g in good] == ["a", "c"]
    assert errors == [
        RowError(3, "tested_at is in the future"),
        RowError(5, "tested_at is more than a year ago"),
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (" a,positive,2026-06-01T08:00:00Z", "user_id holds control characters or leading"),
        ("a\u200b,positive,2026-06-01T08:00:00Z", "user_id holds control characters"),
        ("a,positive,2026-06-01T08:00:00+0800", "tested_at must be an RFC 3339 time"),
        ("a,positive,2026-06-01T08:00Z", "tested_at must be an RFC 3339 time"),
        ("a,positive,٢٠٢٦-06-01T08:00:00Z", "tested_at must be an RFC 3339 time"),
        ("a,positive,2026-06-01T08:00:60Z", "tested_at must be an RFC 3339 time"),
        ("a,posi\rtive,2026-06-01T08:00:00Z", "a carriage return inside the line"),
        ('a,"positive,2026-06-01T08:00:00Z', "broken quoting"),
        ("a;positive;2026-06-01T08:00:00Z", "expected 3 fields"),
    ],
)
def test_a_bad_record_is_reported_with_its_line(line: str, error: str) -> None:
    """Each of these is one bad record on line 2; the good record after it still counts."""
    text = f"user_id,result,tested_at\n{line}\nb,negative,2026-06-01T08:00:00Z\n"
    rows, good, errors = parse(text)
    assert rows == 2
    assert [g.line for g in good] == [3]
    assert len(errors) == 1
    assert errors[0].line == 2
    assert errors[0].error.startswith(error), errors[0].error


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "line 1 must be the header user_id,result,tested_at"),
        (b"user_id,result\n", "line 1 must be the header"),
        (b"user_id,result,tested_at,extra\n", "line 1 must be the header"),
        (b'"user_id,result,tested_at\n', "line 1 must be the header"),
        (b"a,positive,2026-06-01T08:00:00Z\n", "line 1 must be the header"),
        (b"user_id,result,tested_at\n\xc3(,x,y\n", "the body is not UTF-8 (line 2, byte 25)"),
        (b"\xff\xfeu\x00", "the body is not UTF-8 (line 1, byte 0)"),
    ],
)
def test_a_file_without_its_header_or_not_utf8_is_rejected_whole(raw: bytes, message: str) -> None:
    """Nothing of such a file is read: the whole upload is refused with one message."""
    with pytest.raises(UploadRejected, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(raw)


def test_blank_lines_are_no_records_and_the_row_limit_counts_records() -> None:
    """Blank lines (also a CRLF file's) are skipped and do not count toward the limit; one
    record above the limit refuses the file."""
    body = "user_id,result,tested_at\r\n\r\na,negative,2026-06-01T08:00:00Z\r\n\r\n\n"
    rows, good, errors = parse(body, max_rows=1)
    assert (rows, len(good), errors) == (1, 1, [])
    with pytest.raises(TooManyRows, match="the file has 2 rows; an upload holds at most 1"):
        parse(body + "b,negative,2026-06-01T08:00:00Z\n", max_rows=1)


def test_the_exposure_source_names_the_instant_in_utc() -> None:
    """The same test time written with two offsets is one exposure."""
    at = datetime(2026, 6, 2, 0, 0, tzinfo=timezone(timedelta(hours=8)))
    assert exposure_source(at) == "test:2026-06-01T16:00:00Z"
    assert exposure_source(datetime(2026, 6, 1, 8, 0, 0, 5, tzinfo=UTC)) == (
        "test:2026-06-01T08:00:00.000005Z"
    )


@pytest.mark.parametrize(
    "line",
    [
        "positive,110101199001011234,2026-06-01T08:00:00Z",  # user id and result swapped
        "positive,negative,110101199001011234",  # the user id in the time column
        "a,negative,110101199001011234",  # all digits: RFC 3339 characters, but no time
        "a,11010119900101123X,2026-06-01T08:00:00Z",
        "a,negative,1101-01-199001011234",
        "a,negative,2026-06-01 110101199001011234",
    ],
)
def test_an_id_number_in_a_wrong_column_is_never_echoed(line: str) -> None:
    """The error for a bad result or time describes the problem but never repeats a value that
    could be a user id: only result words and near-miss times are quoted back."""
    _, good, errors = parse(f"user_id,result,tested_at\n{line}\n")
    assert good == []
    assert len(errors) == 1
    assert "110101199001011234" not in errors[0].error
    assert "11010119900101123X" not in errors[0].error
    assert "199001011234" not in errors[0].error
    assert errors[0].error.endswith("(the value given is not repeated here)")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("a,2026-06-01T08:00:00Z,positive", "result must be positive or negative, not '2026-"),
        (
            "a,positive,Negative",
            "tested_at must be an RFC 3339 time with an offset, not 'Negative'",
        ),
        (
            "a,positive,2026-06-01T08:00:00",
            "tested_at must be an RFC 3339 time with an offset, not",
        ),
        ("a,positive,2026-6-1 8:00+0800", "tested_at must be an RFC 3339 time with an offset, not"),
        ("a,, 2026-06-01T08:00:00Z", "result must be positive or negative, not an empty field"),
        ("a,positive,  ", "tested_at must be an RFC 3339 time with an offset, not an empty field"),
        ("a,maybe,2026-06-01T08:00:00Z", "result must be positive or negative (the value given is"),
    ],
)
def test_result_words_and_near_miss_times_are_quoted_back(line: str, error: str) -> None:
    """A swapped column holding a result word or a time, and a time that is almost right, are
    shown, since they help fix the file; anything else is described without its value."""
    _, _, errors = parse(f"user_id,result,tested_at\n{line}\n")
    assert len(errors) == 1
    assert errors[0].error.startswith(error), errors[0].error
