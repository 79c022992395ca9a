"""The service's notion of "now": one injectable clock for verify, pass issuance and the rules.

``Clock.now()`` returns Unix seconds as a float. The real clock is :data:`SYSTEM_CLOCK`, whose
``now`` *is* :func:`time.time` (a static attribute: calling it allocates no bound method). Tests
pass another object with a ``now()`` through ``Settings.clock``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...


class SystemClock:
    """The wall clock."""

    now = staticmethod(time.time)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()


def utc_now(clock: Clock) -> datetime:
    """The clock's now as an aware datetime in UTC (what rules, queries and audits compare)."""
    return datetime.fromtimestamp(clock.now(), UTC)
