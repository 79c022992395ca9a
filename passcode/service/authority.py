"""Authority use case: an override (转码) ruling on one citizen (terminals: service/terminals.py)."""

from __future__ import annotations

import os
from datetime import datetime

from passcode.domain.clock import Clock, utc_now
from passcode.domain.model import Color, StatusReason
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Policy
from passcode.domain.status import LiveStatus
from passcode.errors import ValidationFailed
from passcode.service import status
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire
from passcode.store.statuses import add_override, ensure_subject


async def override_status(
    *,
    pool: Pool,
    cache: Cache,
    sealer: Sealer,
    policy: Policy,
    idp_issuer: str,
    user_id: str,
    color: Color,
    reason: StatusReason,
    valid_from: datetime | None,
    valid_until: datetime | None,
    created_by: str,
    clock: Clock,
    timeout: float,
) -> tuple[int, LiveStatus]:
    """Record the ruling (with its audit entry) and re-derive the status in one transaction on
    one connection, then publish it, so verify sees it on the next scan."""
    now = utc_now(clock)
    start = valid_from or now
    if valid_until is not None and valid_until <= start:
        raise ValidationFailed("valid_until must be after valid_from", errors=["valid_until"])
    async with acquire(pool, "add override", timeout) as conn:
        async with conn.transaction():
            subject = await ensure_subject(
                conn,
                subject_id=os.urandom(16),
                user_hash=sealer.user_hash(idp_issuer, user_id),
                sealed=sealer.seal(user_id),
            )
            override_id = await add_override(
                conn,
                subject,
                color=color,
                reason=reason,
                valid_from=start,
                valid_until=valid_until,
                created_by=created_by,
            )
            live = await status.write_one(conn, subject, now=now, policy=policy)
        assert live is not None  # the subject exists
        await status.publish(conn, cache, [(subject, live)], timeout=timeout)
    return override_id, live
