"""Reading the audit log (auditors): a window of entries, and the read itself recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from passcode.domain.clock import Clock, utc_now
from passcode.domain.fields import rfc3339
from passcode.errors import ValidationFailed
from passcode.store import audit
from passcode.store.audit import AuditEntry
from passcode.store.pg import Pool

# Re-exported store types appear in the api's signatures; the api imports no store module.
__all__ = ["DEFAULT_WINDOW", "AuditEntry", "AuditPage", "read_audit_log"]

DEFAULT_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: int | None  # the last entry's id when the page is full, else None


async def read_audit_log(
    pool: Pool,
    *,
    reader: str,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    action: str | None,
    cursor: int,
    limit: int,
    clock: Clock,
    timeout: float,
) -> AuditPage:
    """Entries in ``[since, until)`` (default: the :data:`DEFAULT_WINDOW` up to now), oldest
    first, after the ``cursor`` id; the read is recorded (``audit.read``, by ``reader``, with
    the rows it returns) before it is answered."""
    until = until or utc_now(clock)
    since = since or until - DEFAULT_WINDOW
    if since > until:
        raise ValidationFailed("since must not be after until", errors=["since", "until"])
    entries = await audit.read(
        pool,
        since=since,
        until=until,
        actor=actor,
        action=action,
        after_id=cursor,
        limit=limit,
        timeout=timeout,
    )
    await audit.record(
        pool,
        actor=reader,
        action="audit.read",
        target={"since": rfc3339(since), "until": rfc3339(until), "cursor": cursor},
        rows=len(entries),
        timeout=timeout,
    )
    return AuditPage(entries, entries[-1].id if len(entries) == limit else None)
