"""Test results: one transaction per chunk of an upload, safe to run again.

A chunk finds or creates its subjects (nameless, as :func:`passcode.store.statuses.
subject_for_user` does, but one statement for the whole chunk), records its results (a result
already on file adds nothing), gives each positive its red exposure (once per subject and test
time) and appends the chunk's audit entry, in the caller's transaction, where
:func:`passcode.service.testresults.apply_chunk` also re-derives the statuses of the subjects
that got a new exposure: a crash leaves a chunk either wholly applied and audited or not at
all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from passcode.domain.model import Color, StatusReason
from passcode.domain.testresults import ACTION, exposure_source
from passcode.store import audit
from passcode.store.pg import Connection
from passcode.store.statuses import lock_subjects


@dataclass(frozen=True, slots=True)
class KeyedResult:
    """A good record with the user id replaced by its keyed hash and sealed copy."""

    user_hash: bytes
    sealed: bytes
    positive: bool
    tested_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedChunk:
    applied: int  # results newly on file
    positives: int  # of them positive
    exposed: dict[bytes, str]  # subjects (locked) that got a new exposure, with masked names


async def record_chunk(
    conn: Connection,
    rows: Sequence[KeyedResult],
    *,
    uploaded_by: str,
    audit_target: dict[str, Any],
    timeout: float,
) -> RecordedChunk:
    """Record ``rows`` in the caller's transaction; the subjects whose status they change are
    returned (locked), for the caller to re-derive in the same transaction.

    The transaction also appends the chunk's audit entry (by ``uploaded_by``): ``audit_target``
    plus the chunk's ``records``, ``applied``, ``duplicates`` and ``positives``; ``rows`` is
    ``applied``.

    The subjects are locked in id order before anything refers to them, as every bulk status
    writer does, so uploads, risk-place jobs and declarations wait for each other rather than
    deadlock.
    """
    sealed: dict[bytes, bytes] = {}
    for row in rows:
        sealed.setdefault(row.user_hash, row.sealed)
    await conn.execute(
        "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked)"
        " SELECT id, h, enc, '*' FROM unnest($1::bytea[], $2::bytea[], $3::bytea[])"
        " AS u(id, h, enc) ORDER BY h ON CONFLICT (user_hash) DO NOTHING",
        [os.urandom(16) for _ in sealed],
        list(sealed),
        list(sealed.values()),
    )
    found = await conn.fetch(
        "SELECT user_hash, id FROM subjects WHERE user_hash = ANY($1::bytea[])", list(sealed)
    )
    subject_of: dict[bytes, bytes] = {r["user_hash"]: r["id"] for r in found}
    holders = await lock_subjects(conn, sorted(subject_of.values()), timeout=timeout)
    subjects = [subject_of[row.user_hash] for row in rows]
    inserted = await conn.fetch(
        "INSERT INTO test_results (subject_id, tested_at, result, uploaded_by)"
        " SELECT s, t, r, $4 FROM unnest($1::bytea[], $2::timestamptz[], $3::text[])"
        " AS u(s, t, r) ORDER BY s, t, r ON CONFLICT DO NOTHING RETURNING result",
        subjects,
        [row.tested_at for row in rows],
        ["positive" if row.positive else "negative" for row in rows],
        uploaded_by,
    )
    positive = [(s, row.tested_at) for s, row in zip(subjects, rows, strict=True) if row.positive]
    # Red from the test on, with no end: it holds until an authority's override settles
    # it. Every positive row asks for its exposure, so a result on file without one (from
    # before this code, say) gets it now; one already given adds nothing.
    exposed = await conn.fetch(
        "INSERT INTO exposures (subject_id, color, reason, source, valid_from)"
        " SELECT s, $3, $4, src, t FROM unnest($1::bytea[], $2::timestamptz[], $5::text[])"
        " AS u(s, t, src) ORDER BY s, src ON CONFLICT (subject_id, source) DO NOTHING"
        " RETURNING subject_id",
        [s for s, _ in positive],
        [t for _, t in positive],
        Color.RED.value,
        StatusReason.POSITIVE_TEST.value,
        [exposure_source(t) for _, t in positive],
    )
    changed = sorted({r["subject_id"] for r in exposed})
    applied = len(inserted)
    positives = sum(1 for r in inserted if r["result"] == "positive")
    await audit.append(
        conn,
        actor=uploaded_by,
        action=ACTION,
        target={
            **audit_target,
            "records": len(rows),
            "applied": applied,
            "duplicates": len(rows) - applied,
            "positives": positives,
        },
        rows=applied,
    )
    return RecordedChunk(
        applied=applied, positives=positives, exposed={s: holders[s] for s in changed}
    )
