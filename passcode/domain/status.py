"""The live status (码色) as stored and decided on: its value, its freshness and its version.

A status holds from when it was derived up to, **not including**, its ``valid_until``: at
``now == valid_until`` it is stale and must be derived again, like every window of the rules
(a declaration's lifetime, a ruling's end). Its version moves only when the colour or the
reason does, so a pass (which carries the version) is superseded by every real change and by
nothing else. The verify script in :mod:`passcode.store.cache` spells :func:`decides` in Lua
for the hot path; ``tests/integration/test_status_script.py`` holds the two to one answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from passcode.domain.model import Color, StatusReason
from passcode.domain.rules import Derived, Policy


class LiveStatus(NamedTuple):
    """A subject's status as verify reads it: colour (None = no valid status), version, end of
    validity (Unix seconds, exclusive) and masked name.

    A named tuple, like the other values made on every verify: as immutable as a frozen
    dataclass, whose ``__init__`` costs three times as much (``object.__setattr__`` per field).
    """

    color: Color | None
    version: int
    valid_until: int
    holder: str

    @classmethod
    def from_fields(cls, fields: Sequence[bytes]) -> LiveStatus:
        """From the four stored fields (colour, version, valid-until, name) as bytes; a colour
        that should never be stored raises KeyError."""
        color_raw, version, until, name = fields[0], fields[1], fields[2], fields[3]
        return cls(
            _COLORS[color_raw] if color_raw else None, int(version), int(until), name.decode()
        )


_COLORS = {color.value.encode(): color for color in Color}  # on every verify: no Enum lookup


def is_fresh(valid_until: float, now: float) -> bool:
    """Whether a status valid until ``valid_until`` still holds at ``now`` (same unit)."""
    return now < valid_until


def decides(live: LiveStatus, *, now: float, pass_version: int) -> bool:
    """Whether a stored copy may decide on a pass of ``pass_version`` at ``now`` (Unix
    seconds): fresh, and not older than the pass. Otherwise the truth is derived again."""
    return is_fresh(live.valid_until, now) and pass_version <= live.version


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """A status as PostgreSQL holds it (the truth); no colour and no reason: no valid status,
    ``valid_until`` then being when to look again."""

    color: Color | None
    reason: StatusReason | None
    valid_until: datetime
    version: int

    def live(self, holder: str) -> LiveStatus:
        """The hot copy (whole seconds, rounded down: it never outlives the truth)."""
        return LiveStatus(self.color, self.version, int(self.valid_until.timestamp()), holder)


def next_status(
    before: StoredStatus | None, derived: Derived | None, *, now: datetime, policy: Policy
) -> StoredStatus:
    """The status to store after deriving ``derived`` at ``now``, given the stored ``before``.

    The version starts at 1 and moves only when colour or reason change. With no valid status
    the row says when to look again: one declaration lifetime from now.
    """
    if derived is None:
        color, reason, valid_until = None, None, now + policy.declaration_ttl
    else:
        color, reason, valid_until = derived.color, derived.reason, derived.valid_until
    if before is None:
        version = 1
    elif (before.color, before.reason) != (color, reason):
        version = before.version + 1
    else:
        version = before.version
    return StoredStatus(color, reason, valid_until, version)


def needs_write(before: StoredStatus | None, after: StoredStatus, *, now: datetime) -> bool:
    """Whether re-deriving changed anything worth a write (bulk re-derivations skip the rest,
    so running one twice changes nothing the second time).

    "No status" stays no status: its horizon is only when to look again, so a later horizon
    for a row that still has one to come is no change.
    """
    if before is None or before.version != after.version:
        return True
    if before.valid_until == after.valid_until:
        return False
    return not (after.color is None and before.valid_until > now)
