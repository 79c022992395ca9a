"""Authority use cases: overrides (转码) and terminals."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from passcode.domain.model import Color, StatusReason
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Policy
from passcode.errors import ValidationFailed
from passcode.store.cache import Cache, LiveStatus
from passcode.store.pg import Pool
from passcode.store.statuses import add_override, refresh_status, subject_for_user


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
    timeout: float,
) -> tuple[int, LiveStatus]:
    """Record the ruling and re-derive the status at once, so verify sees it on the next scan."""
    now = datetime.now(UTC)
    start = valid_from or now
    if valid_until is not None and valid_until <= start:
        raise ValidationFailed("valid_until must be after valid_from", errors=["valid_until"])
    subject = await subject_for_user(
        pool,
        subject_id=os.urandom(16),
        user_hash=sealer.user_hash(idp_issuer, user_id),
        sealed=sealer.seal(user_id),
        timeout=timeout,
    )
    override_id = await add_override(
        pool,
        subject,
        color=color,
        reason=reason,
        valid_from=start,
        valid_until=valid_until,
        created_by=created_by,
        timeout=timeout,
    )
    live = await refresh_status(pool, cache, subject, now=now, policy=policy, timeout=timeout)
    assert live is not None  # the subject exists
    return override_id, live
