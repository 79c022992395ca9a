"""Risk-place markings for health officers: mark a place risky for a window (the job that
applies it is :mod:`passcode.service.riskplaces`'s), and read a marking; both audited."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from passcode.domain.clock import Clock, utc_now
from passcode.domain.model import Color
from passcode.errors import NotFound, ValidationFailed
from passcode.store import audit, riskplaces
from passcode.store.pg import Pool
from passcode.store.riskplaces import Marking

# Re-exported store types appear in the api's signatures; the api imports no store module.
__all__ = ["EXPOSURE_MAX", "Marking", "mark_risk_place", "read_marking"]

EXPOSURE_MAX = timedelta(days=366)  # the furthest an exposure may end, from now


async def mark_risk_place(
    pool: Pool,
    *,
    actor: str,
    place: str,
    since: datetime,
    until: datetime,
    color: Color,
    note: str,
    exposure_until: datetime | None,
    retention_days: int,
    clock_skew: int,
    clock: Clock,
    start: Callable[[uuid.UUID], None],
    timeout: float,
) -> tuple[Marking, bool]:
    """The marking of (place, window, colour), created (True) or the one made before (False,
    with its own note and exposure end), audited in the marking's transaction. A marking
    created now, failed before (set back to pending) or left unfinished by a stopped process
    is handed to ``start``; another run of it in progress holds its lock, and this one then
    does nothing.

    The window lies within the scans kept (``retention_days``, a day's grace: partitions go by
    day) and not in the future (the job reads the scans already recorded; ``clock_skew``
    allowed); an exposure end lies ahead, by at most :data:`EXPOSURE_MAX`."""
    now = utc_now(clock)
    retention = timedelta(days=retention_days)
    if until <= since:
        raise ValidationFailed("until must be after since", errors=["since", "until"])
    if until - since > retention:
        raise ValidationFailed(
            f"the window is at most the scan retention, {retention_days} days",
            errors=["since", "until"],
        )
    if until > now + timedelta(seconds=clock_skew):
        raise ValidationFailed(
            "until must not be in the future: the job reads the scans already recorded",
            errors=["until"],
        )
    if since < now - retention - timedelta(days=1):
        raise ValidationFailed(
            f"since is before the scans kept ({retention_days} days)", errors=["since"]
        )
    if exposure_until is not None and exposure_until <= now:
        raise ValidationFailed("exposure_until must be in the future", errors=["exposure_until"])
    if exposure_until is not None and exposure_until > now + EXPOSURE_MAX:
        raise ValidationFailed(
            f"exposure_until is at most {EXPOSURE_MAX.days} days ahead", errors=["exposure_until"]
        )
    marking, created = await riskplaces.create_marking(
        pool,
        place=place,
        since=since,
        until=until,
        color=color,
        note=note,
        exposure_until=exposure_until,
        created_by=actor,
        timeout=timeout,
    )
    if marking.state in {riskplaces.PENDING, riskplaces.RUNNING}:
        start(marking.id)
    return marking, created


async def read_marking(pool: Pool, marking_id: uuid.UUID, *, actor: str, timeout: float) -> Marking:
    """The marking and its job's progress (NotFound when there is none); the read is recorded
    (``risk_place.read``) before it is answered."""
    marking = await riskplaces.get_marking(pool, marking_id, timeout=timeout)
    if marking is None:
        raise NotFound("no such risk place marking")
    await audit.record(
        pool,
        actor=actor,
        action="risk_place.read",
        target={"marking_id": str(marking.id)},
        rows=1,
        timeout=timeout,
    )
    return marking
