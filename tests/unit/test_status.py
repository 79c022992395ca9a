"""The live status's rules (passcode.domain.status): the freshness boundary, exactly at it;
the version rule; the bulk no-op rule; and the declaration body's one mapping and hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from passcode.domain.fields import FieldError
from passcode.domain.model import Color, StatusReason, Symptom
from passcode.domain.rules import Declaration, Derived, Policy, body_hash
from passcode.domain.status import LiveStatus, StoredStatus, decides, is_fresh, needs_write
from passcode.domain.status import next_status as next_status_

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
POLICY = Policy()
GREEN_OK = (Color.GREEN, StatusReason.DECLARED_HEALTHY)


@pytest.mark.parametrize(
    ("now", "fresh"),
    [(T - 1, True), (T - 0.001, True), (T, False), (T + 0.5, False), (T + 1, False)],
)
def test_a_status_holds_up_to_not_including_its_valid_until(now: float, fresh: bool) -> None:
    """One second before ``valid_until`` (and a millisecond before) it holds; at it and after,
    it does not: the boundary verify, its fallback and the citizen's pass all use."""
    assert is_fresh(T, now) is fresh
    assert decides(LiveStatus(Color.GREEN, 3, T, "张*三"), now=now, pass_version=3) is fresh


@pytest.mark.parametrize(("pass_version", "decided"), [(2, True), (3, True), (4, False)])
def test_a_copy_older_than_the_pass_does_not_decide(pass_version: int, decided: bool) -> None:
    """A stored copy decides on passes of its version or older; a newer pass means the copy
    missed a change, so the truth is read instead."""
    live = LiveStatus(Color.GREEN, 3, T + 60, "张*三")
    assert decides(live, now=T, pass_version=pass_version) is decided


def derived(color: Color, reason: StatusReason, until: timedelta) -> Derived:
    return Derived(color=color, reason=reason, valid_until=NOW + until)


def stored(
    color: Color | None, reason: StatusReason | None, until: timedelta, v: int
) -> StoredStatus:
    return StoredStatus(color, reason, NOW + until, v)


def next_status(before: StoredStatus | None, new: Derived | None) -> StoredStatus:
    return next_status_(before, new, now=NOW, policy=POLICY)


def test_the_first_status_is_version_one() -> None:
    """A subject's first status, with or without a colour, is version 1."""
    assert next_status(None, derived(*GREEN_OK, timedelta(days=7))) == stored(
        *GREEN_OK, timedelta(days=7), 1
    )
    assert next_status(None, None) == stored(None, None, POLICY.declaration_ttl, 1)


def test_the_version_moves_only_when_colour_or_reason_does() -> None:
    """Same colour and reason with a new horizon: same version (passes stay current). Another
    colour, or the same colour for another reason, or no status any more: the next version."""
    before = stored(*GREEN_OK, timedelta(days=1), 4)
    assert next_status(before, derived(*GREEN_OK, timedelta(days=7))).version == 4
    yellow = derived(Color.YELLOW, StatusReason.FEVER, timedelta(days=7))
    assert next_status(before, yellow).version == 5
    yellow_before = stored(Color.YELLOW, StatusReason.FEVER, timedelta(days=1), 5)
    symptoms = derived(Color.YELLOW, StatusReason.SYMPTOMS, timedelta(days=7))
    assert next_status(yellow_before, symptoms).version == 6
    assert next_status(before, None) == stored(None, None, POLICY.declaration_ttl, 5)


def test_no_status_looks_again_one_declaration_lifetime_later() -> None:
    """Without a valid status the row's ``valid_until`` is when to look again."""
    after = next_status(stored(None, None, -timedelta(seconds=1), 2), None)
    assert (after.color, after.reason, after.version) == (None, None, 2)
    assert after.valid_until == NOW + POLICY.declaration_ttl


def test_a_bulk_re_derivation_writes_only_what_changed() -> None:
    """A new row, a new version or a new horizon is written; the same status again is not,
    nor a later horizon for "no status" whose current one is still to come (re-runs are
    no-ops); a "no status" whose horizon has passed is written again."""
    now = NOW
    same = stored(*GREEN_OK, timedelta(days=7), 2)
    assert needs_write(None, same, now=now)
    assert not needs_write(same, same, now=now)
    assert needs_write(same, stored(*GREEN_OK, timedelta(days=8), 2), now=now)
    assert needs_write(
        same, stored(Color.RED, StatusReason.QUARANTINE, timedelta(days=8), 3), now=now
    )
    none_ahead = stored(None, None, timedelta(seconds=1), 3)
    assert not needs_write(none_ahead, stored(None, None, timedelta(days=7), 3), now=now)
    none_due = stored(None, None, timedelta(0), 3)
    assert needs_write(none_due, stored(None, None, timedelta(days=7), 3), now=now)


def test_the_hot_copy_rounds_valid_until_down() -> None:
    """Whole seconds, rounded down: the hot copy never outlives the truth."""
    row = StoredStatus(Color.GREEN, StatusReason.DECLARED_HEALTHY, NOW + timedelta(seconds=9.9), 1)
    assert row.live("张*三") == LiveStatus(Color.GREEN, 1, T + 9, "张*三")


def test_a_live_status_reads_its_stored_fields() -> None:
    """From the four stored fields: an empty colour is no status; an unknown one is refused."""
    assert LiveStatus.from_fields([b"red", b"7", b"123", "张*三".encode()]) == LiveStatus(
        Color.RED, 7, 123, "张*三"
    )
    assert LiveStatus.from_fields([b"", b"1", b"5", b"*"]).color is None
    with pytest.raises(KeyError):
        LiveStatus.from_fields([b"blue", b"1", b"5", b"*"])


BODY = {
    "temperature_c": 37.26,
    "symptoms": ["cough"],
    "regions_visited": ["  Wuhan "],
    "close_contact": False,
}


def test_a_declaration_body_maps_to_one_declaration() -> None:
    """The temperature to a tenth, symptoms as the enum, regions trimmed by the field rule."""
    assert Declaration.from_body(BODY, declared_at=NOW) == Declaration(
        declared_at=NOW,
        temperature_c=37.3,
        symptoms=frozenset({Symptom.COUGH}),
        regions=frozenset({"Wuhan"}),
        close_contact=False,
    )
    with pytest.raises(FieldError):
        Declaration.from_body({**BODY, "regions_visited": ["Wu\nhan"]}, declared_at=NOW)


def test_a_body_hash_ignores_spelling_not_content() -> None:
    """Key order does not change the hash (a retry may serialise differently); content does."""
    assert body_hash(BODY) == body_hash(dict(reversed(list(BODY.items()))))
    assert body_hash(BODY) != body_hash({**BODY, "close_contact": True})
