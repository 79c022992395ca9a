"""Erasure: every record of some subjects, in PostgreSQL and in Redis, gone in one go.

The one place that knows where a subject's traces lie (deletion on request, the retention
purge of subjects left with nothing, the sunset all call it):

PostgreSQL, in one transaction: the ``subjects`` row (keyed hash, sealed user id, masked name),
``declarations`` (their idempotency keys with them), ``statuses``, ``overrides``,
``exposures``, ``test_results``, ``cards``, their ``scans`` in every day partition (check-ins
too: they are scans), and the ``scan_dead_letters`` whose fields name the subject.

Redis, before that transaction commits (a Redis failure rolls it back, so a retry finds
everything still there to erase): the status hash, the citizen's rate-limit key (named by the
keyed hash), the dedupe marks of their scan ids, and the scan-stream entries naming them not yet
drained. Left to expire: the replay marks (``rp:<token id>``, the place a pass was last seen,
named by a pass's random token id that nothing stored leads back to; gone after the replay
window, 5 minutes by default).

An authority's open ruling outlives a request to erase (``keep_open_rulings``): a yellow or red
override, or an exposure, whose window has not ended. Its subject row stays (the keyed hash and
sealed id, so the ruling meets the person again when they sign in and declare; the masked name
is blanked), with its status row (re-published to Redis nameless by the sync worker) and the open
rulings themselves; everything else of theirs goes. They stay until the ruling ends (its
``valid_until``; never for one an authority left open-ended, until an authority ends it), after
which the retention purge erases the rest through this module.

The audit log is append-only and not touched: entries written before an erasure may name the
subject's random id (``override.add``, ``card.issue``), which once the subject row is gone leads
to no one.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from passcode.store import audit, catalogs
from passcode.store.cache import Cache
from passcode.store.catalogs import Catalog
from passcode.store.pg import Connection, Pool, acquire
from passcode.store.scans import SEP
from passcode.store.transport import redis_errors

STREAM_PAGE = 1000  # entries per XRANGE while looking for a subject's undrained scans
REDIS_CHUNK = 500  # keys per DEL / ids per XDEL command

# A ruling of an authority still in force, or yet to be: what an erasure on request keeps.
_OPEN = "(valid_until IS NULL OR valid_until > $2)"
_OPEN_OVERRIDE = f"color <> 'green' AND {_OPEN}"


@dataclass(frozen=True, slots=True)
class KeptRuling:
    """An open ruling an erasure left in place, and until when (None: until an authority
    ends it)."""

    subject_id: bytes
    kind: str  # "override" or "exposure"
    color: str
    reason: str
    until: datetime | None


@dataclass(frozen=True, slots=True)
class AuditNote:
    """The audit entry an erasure commits with: who asked, and a random erasure id, never a
    user id or a subject id."""

    actor: str
    action: str
    erasure_id: uuid.UUID
    channel: str  # "self" (DELETE /v1/me), "in_person", "retention", "sunset"


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What went (counts only: nothing here names anyone but ``kept``'s random ids)."""

    subjects: int = 0  # subjects found among those asked for
    erased: int = 0  # subjects whose every record went (their subjects row included)
    rows: dict[str, int] = field(default_factory=dict)  # table → rows deleted
    redis_keys: int = 0
    stream_entries: int = 0
    kept: tuple[KeptRuling, ...] = ()

    def merged(self, other: ErasureReport) -> ErasureReport:
        rows = dict(self.rows)
        for table, count in other.rows.items():
            rows[table] = rows.get(table, 0) + count
        return ErasureReport(
            self.subjects + other.subjects,
            self.erased + other.erased,
            rows,
            self.redis_keys + other.redis_keys,
            self.stream_entries + other.stream_entries,
            self.kept + other.kept,
        )


def _count(status: str) -> int:
    """Rows of a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[1])


@contextlib.asynccontextmanager
async def _connection(db: Pool | Connection, timeout: float) -> AsyncIterator[Connection]:
    if isinstance(db, asyncpg.Pool):
        async with acquire(db, "erase subjects", timeout) as conn:
            yield conn
    else:
        yield db


async def erase_subjects(
    db: Pool | Connection,
    cache: Cache,
    subject_ids: Sequence[bytes],
    *,
    now: datetime,
    timeout: float,
    keep_open_rulings: bool = True,
    note: AuditNote | None = None,
) -> ErasureReport:
    """Erase these subjects (see the module docstring); unknown ids are skipped, so a repeated
    call erases nothing more and answers the same ``kept``.

    ``db``: a pool, or a connection (its open transaction, if any, holds this one as a
    savepoint). ``timeout`` bounds every statement and every Redis pipeline. ``note``: the audit
    entry, committed in the same transaction. :class:`~passcode.errors.StoreUnavailable` when
    PostgreSQL or Redis fails: nothing is committed then.
    """
    ids = sorted(set(subject_ids))
    async with _connection(db, timeout) as conn, conn.transaction():
        report = await _erase(conn, cache, ids, now=now, timeout=timeout, keep=keep_open_rulings)
        if note is not None:
            await audit.append(
                conn,
                actor=note.actor,
                action=note.action,
                target={
                    "erasure_id": str(note.erasure_id),
                    "channel": note.channel,
                    "erased": report.erased,
                    "kept_rulings": len(report.kept),
                },
                rows=sum(report.rows.values()),
            )
    if report.erased:
        # A status published by a declaration that committed just before this erasure took its
        # lock may have reached Redis after the first delete: delete once more, now.
        held = {k.subject_id for k in report.kept}
        gone = [s for s in ids if s not in held]
        await _delete_keys(cache, [cache.status_key(s) for s in gone], timeout=timeout)
    return report


async def _erase(
    conn: Connection,
    cache: Cache,
    ids: list[bytes],
    *,
    now: datetime,
    timeout: float,
    keep: bool,
) -> ErasureReport:
    found = await conn.fetch(
        "SELECT id, user_hash FROM subjects WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE",
        ids,
        timeout=timeout,
    )
    if not found:
        return ErasureReport()
    subjects = [bytes(r["id"]) for r in found]
    hashes = [bytes(r["user_hash"]) for r in found]
    kept = await _open_rulings(conn, subjects, now=now, timeout=timeout) if keep else []
    held_set = {k.subject_id for k in kept}
    held = sorted(held_set)
    gone = [s for s in subjects if s not in held_set]

    rows: dict[str, int] = {}

    async def run(table: str, sql: str, *args: Any) -> str:
        status: str = await conn.execute(sql, *args, timeout=timeout)
        rows[table] = rows.get(table, 0) + _count(status)
        return status

    await run(
        "declarations", "DELETE FROM declarations WHERE subject_id = ANY($1::bytea[])", subjects
    )
    for table, open_clause in (("overrides", _OPEN_OVERRIDE), ("exposures", _OPEN)):
        await run(
            table,
            f"DELETE FROM {table} WHERE subject_id = ANY($1::bytea[])"  # noqa: S608  # constant names
            f" AND NOT (subject_id = ANY($3::bytea[]) AND {open_clause})",
            subjects,
            now,
            held,
        )
    await run(
        "test_results", "DELETE FROM test_results WHERE subject_id = ANY($1::bytea[])", subjects
    )
    cards = await conn.fetchrow(
        "WITH d AS (DELETE FROM cards WHERE subject_id = ANY($1::bytea[]) RETURNING revoked_at)"
        " SELECT count(*) AS n, count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked FROM d",
        subjects,
        timeout=timeout,
    )
    assert cards is not None
    rows["cards"] = int(cards["n"])
    if cards["revoked"]:  # the replicas' caches of revoked serials must let these go too
        await catalogs.bump(conn, Catalog.CARDS, timeout=timeout)
    scan_ids = [
        str(r["scan_id"])
        for r in await conn.fetch(
            "DELETE FROM scans WHERE subject_id = ANY($1::bytea[]) RETURNING scan_id",
            subjects,
            timeout=timeout,
        )
    ]
    rows["scans"] = len(scan_ids)
    # A dead letter holds the stream entry's raw fields: the record names the subject in hex.
    await run(
        "scan_dead_letters",
        "DELETE FROM scan_dead_letters d WHERE EXISTS (SELECT 1 FROM unnest(d.fields) f,"
        " unnest($1::bytea[]) h WHERE position(h IN f) > 0)",
        [s.hex().encode() for s in subjects],
    )
    await run("statuses", "DELETE FROM statuses WHERE subject_id = ANY($1::bytea[])", gone)
    await run("subjects", "DELETE FROM subjects WHERE id = ANY($1::bytea[])", gone)
    if held:
        await conn.execute(
            "UPDATE subjects SET name_masked = '*' WHERE id = ANY($1::bytea[])",
            held,
            timeout=timeout,
        )
        # Redis's copy goes below; the sync worker puts it back, nameless, from here.
        await conn.execute(
            "UPDATE statuses SET cached_version = 0 WHERE subject_id = ANY($1::bytea[])",
            held,
            timeout=timeout,
        )

    entries, streamed_ids = await _drop_stream_entries(cache, subjects, timeout=timeout)
    keys = [cache.status_key(s) for s in subjects]
    keys += [cache.rate_key("c", h, h.hex()) for h in hashes]
    keys += [
        cache.dedupe_key(shard, sid)
        for sid in sorted(set(scan_ids) | streamed_ids)
        for shard in range(cache.shards)
    ]
    deleted = await _delete_keys(cache, keys, timeout=timeout)
    return ErasureReport(
        subjects=len(subjects),
        erased=len(gone),
        rows=rows,
        redis_keys=deleted,
        stream_entries=entries,
        kept=tuple(kept),
    )


async def _open_rulings(
    conn: Connection, subjects: list[bytes], *, now: datetime, timeout: float
) -> list[KeptRuling]:
    rows = await conn.fetch(
        f"SELECT subject_id, 'override' AS kind, color, reason, valid_until FROM overrides"  # noqa: S608  # constant clauses
        f" WHERE subject_id = ANY($1::bytea[]) AND {_OPEN_OVERRIDE}"
        f" UNION ALL SELECT subject_id, 'exposure', color, reason, valid_until FROM exposures"
        f" WHERE subject_id = ANY($1::bytea[]) AND {_OPEN}"
        " ORDER BY subject_id, kind, valid_until NULLS LAST, reason",
        subjects,
        now,
        timeout=timeout,
    )
    return [
        KeptRuling(bytes(r["subject_id"]), r["kind"], r["color"], r["reason"], r["valid_until"])
        for r in rows
    ]


def _names_subject(fields: Sequence[bytes], hexes: frozenset[str]) -> str | None:
    """The scan id of a stream entry whose record names one of ``hexes``, else None."""
    for name, value in zip(fields[::2], fields[1::2], strict=False):
        if name == b"r":
            parts = value.decode(errors="replace").split(SEP)
            if len(parts) > 4 and parts[4] in hexes:
                return parts[0]
    return None


async def _drop_stream_entries(
    cache: Cache, subjects: Iterable[bytes], *, timeout: float
) -> tuple[int, set[str]]:
    """XDEL every undrained scan-stream entry naming these subjects, on every shard (the drain
    empties the stream within seconds, so this walks little; an entry the drain already holds
    is skipped by it once deleted). Returns how many went and their scan ids."""
    hexes = frozenset(s.hex() for s in subjects)
    dropped = 0
    scan_ids: set[str] = set()
    execute = cache.transport.execute
    with redis_errors("erase scan stream entries"):
        for stream in cache.stream_keys():
            start = "-"
            while True:
                command = ("XRANGE", stream, start, "+", "COUNT", STREAM_PAGE)
                (page,) = await execute([(command, stream)], timeout=timeout, durable=False)
                matched: list[bytes] = []
                for entry_id, fields in page:
                    sid = _names_subject(fields or (), hexes)
                    if sid is not None:
                        matched.append(entry_id)
                        scan_ids.add(sid)
                for at in range(0, len(matched), REDIS_CHUNK):
                    chunk = matched[at : at + REDIS_CHUNK]
                    (n,) = await execute([(("XDEL", stream, *chunk), stream)], timeout=timeout)
                    dropped += int(n)
                if len(page) < STREAM_PAGE:
                    break
                start = "(" + page[-1][0].decode()
    return dropped, scan_ids


async def _delete_keys(cache: Cache, keys: Sequence[str], *, timeout: float) -> int:
    """DEL these keys, one command per key (they lie on many cluster nodes), in pipelines of
    :data:`REDIS_CHUNK`; how many existed."""
    deleted = 0
    with redis_errors("erase keys"):
        for at in range(0, len(keys), REDIS_CHUNK):
            chunk = keys[at : at + REDIS_CHUNK]
            replies = await cache.transport.execute(
                [(("DEL", key), key) for key in chunk], timeout=timeout
            )
            deleted += sum(int(r) for r in replies)
    return deleted


async def erase_all_subjects(
    pool: Pool,
    cache: Cache,
    *,
    now: datetime,
    timeout: float,
    batch: int = 500,
    keep_open_rulings: bool = False,
    note: AuditNote | None = None,
) -> ErasureReport:
    """:func:`erase_subjects` for every subject, ``batch`` at a time in id order (one
    transaction per batch, so a failure leaves the batches before it erased and a re-run goes
    on from there). For the sunset; ``note`` is recorded once, with the first batch."""
    total = ErasureReport()
    after = b""
    while True:
        async with acquire(pool, "list subjects", timeout) as conn:
            page = [
                bytes(r["id"])
                for r in await conn.fetch(
                    "SELECT id FROM subjects WHERE id > $1 ORDER BY id LIMIT $2",
                    after,
                    batch,
                    timeout=timeout,
                )
            ]
        if not page:
            return total
        report = await erase_subjects(
            pool,
            cache,
            page,
            now=now,
            timeout=timeout,
            keep_open_rulings=keep_open_rulings,
            note=note,
        )
        note = None
        total = total.merged(report)
        after = page[-1]
