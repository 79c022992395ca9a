"""Bulk test results (issue 5): a checked upload applied chunk by chunk; positives turn red.

Each chunk is one transaction (subjects, results, exposures, the statuses they change), so a
crash loses at most the chunk in flight and a re-upload of the same file completes what is
missing: results already on file are duplicates and add nothing. Each chunk's audit entry
commits with it, so nothing is applied unaudited however an upload ends. A positive gives an
open-ended red exposure (reason ``positive_test``): the subject stays red until an authority's
override settles it. Negatives are only recorded; they release nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from passcode.domain.clock import Clock, utc_now
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Policy
from passcode.domain.testresults import (
    ACTION,
    LabResult,
    RowError,
    TooManyRows,
    UploadRejected,
    parse_upload,
)
from passcode.errors import PayloadTooLarge, ValidationFailed
from passcode.service import status
from passcode.store import audit
from passcode.store.cache import Cache
from passcode.store.pg import Pool, acquire
from passcode.store.testresults import KeyedResult, record_chunk

CHUNK = 1000  # records per transaction; its subjects stay locked while it runs


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    applied: int  # results newly on file
    positives: int  # of them positive
    exposed: int  # subjects that got a new exposure (and so had their status re-derived)
    statuses: status.StatusChanges


async def apply_chunk(
    pool: Pool,
    rows: Sequence[KeyedResult],
    *,
    uploaded_by: str,
    audit_target: dict[str, Any],
    now: datetime,
    policy: Policy,
    timeout: float,
) -> ChunkOutcome:
    """One chunk in one transaction: its results, exposures and audit entry
    (:func:`record_chunk`) with the statuses they change (Postgres only: the caller publishes
    them)."""
    async with acquire(pool, "record test results", timeout) as conn, conn.transaction():
        recorded = await record_chunk(
            conn, rows, uploaded_by=uploaded_by, audit_target=audit_target, timeout=timeout
        )
        changes = await status.write_locked(
            conn, recorded.exposed, now=now, policy=policy, timeout=timeout
        )
    return ChunkOutcome(recorded.applied, recorded.positives, len(recorded.exposed), changes)


@dataclass(slots=True)
class Tally:
    """What an upload did so far (filled in as chunks commit, so a failure can still report)."""

    applied: int = 0
    positives: int = 0


async def apply_results(
    results: Sequence[LabResult],
    *,
    pool: Pool,
    cache: Cache,
    sealer: Sealer,
    idp_issuer: str,
    actor: str,
    upload_id: str,
    summary: dict[str, Any],
    clock: Clock,
    policy: Policy,
    timeout: float,
    tally: Tally,
) -> None:
    """Record ``results``: a subject with a new positive is red at its next scan (or, if Redis
    missed the write, once the drain's sync repairs it).

    Every chunk's audit entry (action ``test_results.upload``, by ``actor``) holds ``summary``
    (the upload's counts; never user ids), ``upload`` (``upload_id``), ``chunk`` (1-based) of
    ``chunks`` and that chunk's counts. An upload with no good record gets one entry, chunk 0
    of 0, so every upload is audited.
    """
    keyed = await asyncio.to_thread(_keyed, sealer, idp_issuer, results)
    chunks = (len(keyed) + CHUNK - 1) // CHUNK
    base = {**summary, "upload": upload_id, "chunks": chunks}
    if not keyed:
        await audit.record(
            pool,
            actor=actor,
            action=ACTION,
            target={
                **base,
                "chunk": 0,
                "records": 0,
                "applied": 0,
                "duplicates": 0,
                "positives": 0,
            },
            rows=0,
            timeout=timeout,
        )
    for index, start in enumerate(range(0, len(keyed), CHUNK), start=1):
        outcome = await apply_chunk(
            pool,
            keyed[start : start + CHUNK],
            uploaded_by=actor,
            audit_target={**base, "chunk": index},
            now=utc_now(clock),
            policy=policy,
            timeout=timeout,
        )
        tally.applied += outcome.applied
        tally.positives += outcome.positives
        await status.publish_pooled(pool, cache, outcome.statuses.written, timeout=timeout)


@dataclass(frozen=True, slots=True)
class UploadReport:
    """What an upload did: its records, the good ones newly applied, the bad ones' errors."""

    rows: int
    good: int
    applied: int
    positives: int
    errors: list[RowError]


async def upload_results(
    raw: bytes,
    *,
    pool: Pool,
    cache: Cache,
    sealer: Sealer,
    idp_issuer: str,
    actor: str,
    upload_id: str,
    clock: Clock,
    skew: timedelta,
    max_rows: int,
    policy: Policy,
    timeout: float,
) -> UploadReport:
    """Check a CSV upload row by row (at most ``max_rows`` records, else PayloadTooLarge; not
    UTF-8 or no header: ValidationFailed) and apply its good records (:func:`apply_results`),
    even when others are bad. A test time may lie up to ``skew`` past the clock's now."""
    try:
        # Checking 100,000 rows takes a while: off the event loop, so verify keeps answering.
        parsed = await asyncio.to_thread(
            parse_upload,
            raw,
            now=utc_now(clock),
            skew=skew,
            max_rows=max_rows,
        )
    except TooManyRows as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except UploadRejected as exc:
        raise ValidationFailed(str(exc), errors=["body"]) from exc
    tally = Tally()
    # Each chunk writes its own audit entry in its own transaction (see apply_results), so
    # whatever commits is audited even if the upload is cut short by a failure or shutdown.
    await apply_results(
        parsed.good,
        pool=pool,
        cache=cache,
        sealer=sealer,
        idp_issuer=idp_issuer,
        actor=actor,
        upload_id=upload_id,
        summary={"rows": parsed.rows, "good": len(parsed.good), "rejected": len(parsed.errors)},
        clock=clock,
        policy=policy,
        timeout=timeout,
        tally=tally,
    )
    return UploadReport(
        parsed.rows, len(parsed.good), tally.applied, tally.positives, parsed.errors
    )


def _keyed(sealer: Sealer, idp_issuer: str, results: Sequence[LabResult]) -> list[KeyedResult]:
    """User ids hashed and sealed (once per user; CPU work, run off the event loop), in key
    order so each user's rows sit together and chunks lock subjects in one order."""
    users: dict[str, tuple[bytes, bytes]] = {}
    keyed = []
    for result in results:
        user = users.get(result.user_id)
        if user is None:
            user = (sealer.user_hash(idp_issuer, result.user_id), sealer.seal(result.user_id))
            users[result.user_id] = user
        keyed.append(KeyedResult(user[0], user[1], result.positive, result.tested_at))
    keyed.sort(key=lambda k: (k.user_hash, k.tested_at, k.positive))
    return keyed
