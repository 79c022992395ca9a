"""Replay counts for health officers: scans flagged as replays (one pass at two places within
the replay window) in a window, and the places with the most; each count audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from passcode.domain.clock import Clock, utc_now
from passcode.domain.fields import rfc3339
from passcode.errors import ValidationFailed
from passcode.store import audit
from passcode.store.pg import Pool
from passcode.store.scans import count_replays as count_flagged

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class ReplayCount:
    since: datetime
    until: datetime
    total: int
    by_place: list[tuple[str, int]]  # the most first


async def count_replays(
    pool: Pool,
    *,
    actor: str,
    since: datetime | None,
    until: datetime | None,
    clock: Clock,
    timeout: float,
) -> ReplayCount:
    """Replays in ``[since, until)``; a missing end is the other plus :data:`DEFAULT_WINDOW`
    (or minus it), both missing the last 24 hours to now. At most :data:`MAX_WINDOW` long.
    Recorded (``replays.count``, the places returned) before it is answered."""
    if until is None:
        until = since + DEFAULT_WINDOW if since is not None else utc_now(clock)
    if since is None:
        since = until - DEFAULT_WINDOW
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    if until - since > MAX_WINDOW:
        raise ValidationFailed("the window is at most 31 days", errors=["since", "until"])
    total, by_place = await count_flagged(pool, since=since, until=until, timeout=timeout)
    await audit.record(
        pool,
        actor=actor,
        action="replays.count",
        target={"since": rfc3339(since), "until": rfc3339(until)},
        rows=len(by_place),
        timeout=timeout,
    )
    return ReplayCount(since, until, total, by_place)
