"""AuthenticatedPasses (passcode/domain/passcache.py): the in-process memory of codes whose
signature and structure were already checked. It must stay bounded, drop expired entries before
live ones, store nothing when disabled, and only ever answer for the exact code text it was given.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from passcode.domain.model import Color
from passcode.domain.passcache import Authenticated, AuthenticatedPasses
from passcode.domain.passfmt import PassClaims

KID = b"\x01" * 8
NOW = 1_700_000_000


def entry(expires_at: int) -> Authenticated:
    claims = PassClaims(
        issuer="passcode",
        subject=os.urandom(16),
        issued_at=expires_at - 60,
        expires_at=expires_at,
        token_id=os.urandom(8),
        color=Color.GREEN,
        version=1,
    )
    return Authenticated(claims, KID)


def test_get_answers_only_for_the_exact_code_text() -> None:
    """A stored code is found under its exact text; any other text (a one-character change,
    a prefix, the code with a trailing space) is not found."""
    cache = AuthenticatedPasses(10, leeway=30)
    found = entry(NOW + 60)
    cache.put("PC1:ABCDEF", found, now=NOW)
    assert cache.get("PC1:ABCDEF") is found
    for other in ("PC1:ABCDEG", "PC1:ABCDE", "PC1:ABCDEF ", "pc1:ABCDEF", "PC1:XBCDEF"):
        assert cache.get(other) is None


def test_max_entries_zero_stores_nothing() -> None:
    """Disabled (max_entries=0): every put is dropped, so every scan authenticates afresh."""
    cache = AuthenticatedPasses(0, leeway=30)
    for index in range(50):
        cache.put(f"PC1:{index}", entry(NOW + 60), now=NOW)
    assert len(cache) == 0
    assert cache.get("PC1:0") is None


def test_size_stays_bounded_under_many_live_codes() -> None:
    """10 000 distinct live codes into a 100-entry cache never hold more than 100, and the
    newest code put is always kept (it is the one about to be scanned again)."""
    cache = AuthenticatedPasses(100, leeway=30)
    for index in range(10_000):
        code = f"PC1:{index}"
        cache.put(code, entry(NOW + 60), now=NOW)
        assert len(cache) <= 100
        assert cache.get(code) is not None


def test_expired_entries_are_evicted_before_live_ones() -> None:
    """When the cache is full, entries past expiry + leeway go first: a cache holding 60
    expired and 40 live codes keeps all 40 live ones (and the new one) after the next put."""
    cache = AuthenticatedPasses(100, leeway=30)
    expired = [f"PC1:old{index}" for index in range(60)]
    live = [f"PC1:new{index}" for index in range(40)]
    # interleaved, so insertion order alone would not keep the live ones
    for old, new in zip(expired[:40], live, strict=True):
        cache.put(old, entry(NOW - 31), now=NOW - 100)  # past expiry + leeway at NOW
        cache.put(new, entry(NOW + 60), now=NOW - 100)
    for old in expired[40:]:
        cache.put(old, entry(NOW - 31), now=NOW - 100)
    assert len(cache) == 100

    cache.put("PC1:fresh", entry(NOW + 60), now=NOW)
    assert all(cache.get(code) is None for code in expired)
    assert all(cache.get(code) is not None for code in live)
    assert cache.get("PC1:fresh") is not None
    assert len(cache) == 41


def test_entry_within_the_leeway_counts_as_live() -> None:
    """An entry expired by less than the leeway may still be admitted (clock skew), so it is
    not evicted as expired: the boundary is expires_at + leeway."""
    cache = AuthenticatedPasses(4, leeway=30)
    cache.put("PC1:edge", entry(NOW - 30), now=NOW)  # exactly at expiry + leeway: still live
    for index in range(3):
        cache.put(f"PC1:gone{index}", entry(NOW - 31), now=NOW)
    cache.put("PC1:next", entry(NOW + 60), now=NOW)
    assert cache.get("PC1:edge") is not None
    assert all(cache.get(f"PC1:gone{index}") is None for index in range(3))


def test_too_many_live_entries_keep_the_newest_half() -> None:
    """All live and full: the oldest-inserted half goes, the newest half and the new code stay."""
    cache = AuthenticatedPasses(10, leeway=0)
    codes = [f"PC1:{index}" for index in range(10)]
    for code in codes:
        cache.put(code, entry(NOW + 60), now=NOW)
    cache.put("PC1:new", entry(NOW + 60), now=NOW)
    assert [code for code in codes if cache.get(code) is not None] == codes[5:]
    assert cache.get("PC1:new") is not None
    assert len(cache) == 6


@settings(max_examples=200, deadline=None)
@given(
    max_entries=st.integers(min_value=0, max_value=20),
    puts=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40),  # code
            st.integers(min_value=-100, max_value=100),  # expiry relative to now
            st.integers(min_value=0, max_value=50),  # time step
        ),
        max_size=120,
    ),
)
def test_any_sequence_of_puts_stays_bounded_and_keeps_the_last(
    max_entries: int, puts: list[tuple[int, int, int]]
) -> None:
    """Property: whatever codes, expiries and clock steps, the size never exceeds
    max_entries, the code just put is retrievable (unless disabled or already expired), and
    every entry found is exactly what was last put under that text."""
    cache = AuthenticatedPasses(max_entries, leeway=5)
    now = NOW
    last: dict[str, Authenticated] = {}
    for code_no, expiry, step in puts:
        now += step
        code = f"PC1:{code_no}"
        found = entry(now + expiry)
        cache.put(code, found, now=now)
        last[code] = found
        assert len(cache) <= max_entries
        if max_entries and now <= found.claims.expires_at + 5:
            assert cache.get(code) is found
        else:  # disabled, or already expired when put: nothing is kept under that text
            assert cache.get(code) is None
        for other, value in last.items():
            hit = cache.get(other)
            assert hit is None or hit is value
