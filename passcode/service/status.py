"""The status use case: derive from the facts, write PostgreSQL, then Redis, then mark synced.

PostgreSQL is the truth and is written first, in the caller's transaction when it has one (a
declaration, an override, a chunk of test results or of a risk-place job commits with the
statuses it changes). Redis gets the hot copy after the commit; the row is then marked in sync
(``cached_version``). A Redis failure leaves the mark behind and :func:`sync_unsynced` (the
drain's status sync) pushes the row later. Every writer of a status goes through here; the
rules of the value itself are :mod:`passcode.domain.status`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from passcode.domain.rules import Policy, derive_status
from passcode.domain.status import LiveStatus, needs_write, next_status
from passcode.errors import StoreUnavailable
from passcode.store import statuses
from passcode.store.cache import Cache
from passcode.store.pg import Connection, Pool, acquire, pg_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StatusChanges:
    """What a bulk re-derivation wrote: the rows that changed (with their new hot copy), and
    how many of them got a new version (colour or reason changed, or a first status)."""

    written: list[tuple[bytes, LiveStatus]]
    bumped: int


async def write_one(
    conn: Connection, subject_id: bytes, *, now: datetime, policy: Policy
) -> LiveStatus | None:
    """Derive one subject's status at ``now`` and write it, in the caller's transaction (the
    subject's row locked until it ends). None for an unknown subject."""
    holder = await statuses.lock_subject(conn, subject_id)
    if holder is None:
        return None
    declaration, overrides, exposures = await statuses.facts(conn, subject_id, now)
    derived = derive_status(declaration, overrides, exposures, now=now, policy=policy)
    before = (await statuses.stored_statuses(conn, [subject_id], timeout=None)).get(subject_id)
    after = next_status(before, derived, now=now, policy=policy)
    await statuses.write_statuses(conn, [(subject_id, after)], now=now, timeout=None)
    return after.live(holder)


async def write_locked(
    conn: Connection, holders: dict[bytes, str], *, now: datetime, policy: Policy, timeout: float
) -> StatusChanges:
    """:func:`write_one` for subjects the caller locked (:func:`statuses.lock_subjects`) in
    its transaction: set-based reads of the facts, one write for the rows that change."""
    ids = list(holders)
    declarations, overrides, exposures = await statuses.bulk_facts(conn, ids, now, timeout=timeout)
    current = await statuses.stored_statuses(conn, ids, timeout=timeout)
    changed = []
    written: list[tuple[bytes, LiveStatus]] = []
    bumped = 0
    for subject in ids:
        derived = derive_status(
            declarations.get(subject),
            overrides.get(subject, ()),
            exposures.get(subject, ()),
            now=now,
            policy=policy,
        )
        before = current.get(subject)
        after = next_status(before, derived, now=now, policy=policy)
        if not needs_write(before, after, now=now):
            continue
        if before is None or after.version != before.version:
            bumped += 1
        changed.append((subject, after))
        written.append((subject, after.live(holders[subject])))
    await statuses.write_statuses(conn, changed, now=now, timeout=timeout)
    return StatusChanges(written=written, bumped=bumped)


async def publish(
    conn: Connection, cache: Cache, items: Sequence[tuple[bytes, LiveStatus]], *, timeout: float
) -> int:
    """Put committed statuses in Redis, then mark them in sync on ``conn``. Returns how many
    Redis took (0 when a store failed: the sync worker repairs those)."""
    if not items:
        return 0
    try:
        if len(items) == 1:
            await cache.put_status(*items[0])
            written = 1
        else:
            written = await cache.put_statuses(items)
        with pg_errors("mark cached"):
            await statuses.mark_cached(conn, items, timeout=timeout)
    except StoreUnavailable:
        log.warning("statuses written to postgres but not yet to redis; the sync worker retries")
        return 0
    return written


async def publish_pooled(
    pool: Pool, cache: Cache, items: Sequence[tuple[bytes, LiveStatus]], *, timeout: float
) -> int:
    """:func:`publish` on a pooled connection (while the caller's own one does other work)."""
    if not items:
        return 0
    try:
        async with acquire(pool, "mark cached", timeout) as conn:
            return await publish(conn, cache, items, timeout=timeout)
    except StoreUnavailable:
        log.warning("statuses written to postgres but not yet to redis; the sync worker retries")
        return 0


async def refresh_on(
    conn: Connection,
    cache: Cache,
    subject_id: bytes,
    *,
    now: datetime,
    policy: Policy,
    timeout: float,
) -> LiveStatus | None:
    """Derive, write and publish one subject's status on the caller's connection (outside a
    transaction: this one commits before Redis is written). None for an unknown subject."""
    async with conn.transaction():
        live = await write_one(conn, subject_id, now=now, policy=policy)
    if live is not None:
        await publish(conn, cache, [(subject_id, live)], timeout=timeout)
    return live


async def refresh(
    pool: Pool, cache: Cache, subject_id: bytes, *, now: datetime, policy: Policy, timeout: float
) -> LiveStatus | None:
    """:func:`refresh_on` on one pooled connection."""
    async with acquire(pool, "refresh status", timeout) as conn:
        return await refresh_on(conn, cache, subject_id, now=now, policy=policy, timeout=timeout)


async def refresh_many(
    pool: Pool,
    cache: Cache,
    subject_ids: Sequence[bytes],
    *,
    now: datetime,
    policy: Policy,
    timeout: float,
) -> StatusChanges:
    """:func:`refresh` for many subjects on one connection: rows locked in id order, one
    write for the rows that change, then one pipelined Redis pass. Unknown subjects are
    skipped."""
    async with acquire(pool, "refresh statuses", timeout) as conn:
        async with conn.transaction():
            holders = await statuses.lock_subjects(conn, sorted(set(subject_ids)), timeout=timeout)
            changes = await write_locked(conn, holders, now=now, policy=policy, timeout=timeout)
        await publish(conn, cache, changes.written, timeout=timeout)
    return changes


async def sync_unsynced(pool: Pool, cache: Cache, *, limit: int, timeout: float) -> int:
    """Push statuses whose Redis write failed earlier (one pipelined pass, on one
    connection); returns how many were repaired."""
    async with acquire(pool, "sync statuses", timeout) as conn:
        items = await statuses.unsynced(conn, limit=limit)
        return await publish(conn, cache, items, timeout=timeout)
