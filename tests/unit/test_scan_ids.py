"""Server-made scan ids: canonical version 7 UUIDs carrying the scan's millisecond."""

from __future__ import annotations

import uuid

from passcode.service.verify import ScanIds

NOW = 1_795_000_000.123  # 2026-11-18, Unix seconds


def test_scan_ids_are_canonical_version_7_uuids_with_the_rfc_variant() -> None:
    ids = ScanIds(batch=4)
    for n in range(50):  # across several refills of the random pool
        text = ids.next(NOW + n)
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_scan_id_leads_with_the_scans_unix_millisecond_so_ids_sort_by_time() -> None:
    ids = ScanIds()
    moments = [NOW + step / 1000 for step in range(0, 5000, 7)]
    made = [uuid.UUID(ids.next(moment)) for moment in moments]
    assert [u.int >> 80 for u in made] == [int(moment * 1000) for moment in moments]
    assert sorted(made, key=lambda u: u.int) == made


def test_scan_ids_of_one_millisecond_differ_in_their_random_bits() -> None:
    ids = ScanIds(batch=16)
    made = {ids.next(NOW) for _ in range(10_000)}
    assert len(made) == 10_000
    assert len({text[:13] for text in made}) == 1  # the same millisecond prefix
    assert len({text[15:18] for text in made}) > 1000  # rand_a varies
