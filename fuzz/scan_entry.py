"""atheris harness: the drain's decoder of scan-stream entries (``store.scans.decode_entry``).

A stream entry is bytes some process wrote into Redis; a bad one once stopped the drain for
good (issue 11: a terminal time PostgreSQL's encoder could not hold). Properties:

* the decoder raises nothing but ``ValueError`` (the drain makes that a dead letter);
* a record it returns holds only what the COPY into the scan log can encode: ids that parse as
  UUIDs, a scan time within the stored range, a terminal time that is aware and convertible to
  UTC, a subject of bytes, decision, reason and colour among their enums' values.

Inputs are chosen by the first byte: arbitrary fields (split at a byte), a genuine entry of
either layout with one field replaced by fuzzed bytes, or a genuine record text with one of its
``|``-separated parts replaced.

Run: ``python fuzz/scan_entry.py [corpus dirs] -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports(include=["passcode"]):
    from passcode.domain.model import Color, Decision, Kind, Reason
    from passcode.store.scans import SCAN_TIME_RANGE_MS, SEP, decode_entry

SCAN_ID = "0190a0b0-c0d0-7e0f-8a1b-2c3d4e5f6071"
TERMINAL_ID = "5b1f4a2e-9c3d-4e8f-a7b6-1c2d3e4f5a6b"
RECORD = [SCAN_ID, "1800000000000", "2027-01-15T08:00:00+08:00", TERMINAL_ID, "ab" * 16, "3"]
DECIDED = [*RECORD, "admit", "ok", "green"]
SNAPSHOT = [*RECORD, "", "", ""]
DECISIONS = {d.value for d in Decision}
REASONS = {r.value for r in Reason}
COLORS = {c.value for c in Color}
KINDS = {k.value for k in Kind}


def _entry(fdp: atheris.FuzzedDataProvider) -> list[bytes]:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:  # anything at all, as fields
        count = fdp.ConsumeIntInRange(0, 10)
        return [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) for _ in range(count)]
    if choice == 1:  # a decided entry, one part of its record text replaced
        parts = list(DECIDED)
        parts[fdp.ConsumeIntInRange(0, len(parts) - 1)] = fdp.ConsumeUnicodeNoSurrogates(48)
        return [b"r", SEP.join(parts).encode()]
    fields = [b"sc", b"green", b"sv", b"3", b"r", SEP.join(SNAPSHOT).encode()]
    if choice == 2:  # a snapshot entry, one part of its record text replaced
        parts = list(SNAPSHOT)
        parts[fdp.ConsumeIntInRange(0, len(parts) - 1)] = fdp.ConsumeUnicodeNoSurrogates(48)
        fields[5] = SEP.join(parts).encode()
        return fields
    # a snapshot entry, one field (name or value) replaced, maybe the replay flag added
    if fdp.ConsumeBool():
        fields += [b"rp", fdp.ConsumeBytes(4)]
    fields[fdp.ConsumeIntInRange(0, len(fields) - 1)] = fdp.ConsumeBytes(48)
    return fields


def _check(record: tuple[object, ...]) -> None:
    at, scan_id, terminal_time, terminal_id, place, subject, decision, reason, color, replay = (
        record[:10]
    )
    kind, issuer, cert_hash = record[10:]
    uuid.UUID(str(scan_id))
    uuid.UUID(str(terminal_id))
    assert isinstance(at, datetime), at
    assert at.tzinfo is not None, at
    low, high = SCAN_TIME_RANGE_MS
    assert low <= at.timestamp() * 1000 < high + 1, at
    if terminal_time is not None:
        assert isinstance(terminal_time, datetime), terminal_time
        assert terminal_time.tzinfo is not None, terminal_time
        terminal_time.astimezone(UTC)  # what the COPY's encoder does; OverflowError is the bug
    assert place is None
    assert subject is None or isinstance(subject, bytes)
    assert decision in DECISIONS, decision
    assert reason in REASONS, reason
    assert color is None or color in COLORS, color
    assert isinstance(replay, bool)
    assert kind is None or kind in KINDS, kind
    assert issuer is None or (isinstance(issuer, str) and issuer), issuer
    assert cert_hash is None or isinstance(cert_hash, bytes), cert_hash


def test_one_input(data: bytes) -> None:
    fields = _entry(atheris.FuzzedDataProvider(data))
    try:
        record = decode_entry(fields)
    except ValueError:
        return
    _check(record)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
