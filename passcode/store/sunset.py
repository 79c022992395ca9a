"""The sunset's SQL and Redis: empty every citizen-linked table in one transaction, keeping the
audit log and counts per day and place type, and delete every Redis key of the deployment.

Why not :func:`passcode.store.erasure.erase_all_subjects`: that erases subject by subject in
batches of their own transactions, and only what names a subject. The sunset must take
everything, at once, or nothing: scans that name no subject (an unreadable code still carries a
scan id, a time and a place), dead letters whose fields name nobody readable, replay marks,
terminal rate limits, the whole scan stream. ``TRUNCATE`` in one transaction does that: the
counts kept are computed from the same snapshot the rows are destroyed from, a failure anywhere
(Redis included: its keys go before the transaction commits) leaves PostgreSQL as it was, and
the rows' files are removed rather than left as dead tuples on disk until a vacuum, which a
``DELETE`` of millions of rows would do.

Tables not listed in :data:`CITIZEN_TABLES` are kept on purpose (:data:`KEPT_TABLES` says why
each is no person's); a migration adding a table must put it in one of them (a test fails
otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from passcode.domain.sunsetreport import ScanCount
from passcode.store import audit, catalogs
from passcode.store.cache import Cache
from passcode.store.catalogs import Catalog
from passcode.store.pg import Connection, Pool, acquire
from passcode.store.transport import redis_errors

# Every table holding a citizen's records, emptied by the sunset ("idempotency records" are the
# declarations' Idempotency-Keys and body hashes; check-ins are scans).
CITIZEN_TABLES = (
    "subjects",
    "declarations",
    "statuses",
    "overrides",
    "exposures",
    "test_results",
    "cards",
    "scans",
    "scan_dead_letters",
)

# What stays, and why it names no person.
KEPT_TABLES = {
    "audit_log": "the record of who did what; pseudonyms only, append-only by design",
    "sunset_scan_counts": "the aggregates the sunset keeps",
    "schema_migrations": "the schema's version",
    "admin_credentials": "staff credentials (key hashes), no citizen",
    "terminals": "scanners and venue terminals at places",
    "places": "places and their types",
    "place_policies": "what each place accepts",
    "venues": "places' posters",
    "risk_places": "authorities' markings of places (their resume cursor is cleared)",
    "trust_dcc_signers": "foreign signers' certificates",
    "trust_shc_issuers": "foreign issuers' keys",
    "catalog_versions": "cache versions",
}

REDIS_SCAN_COUNT = 1000
REDIS_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Destroyed:
    """What one sunset destroyed and kept (counts only)."""

    rows: dict[str, int]  # table (and "scan_partitions") → rows destroyed
    redis_keys: dict[str, int] = field(default_factory=dict)  # key kind → keys deleted
    scan_counts: list[ScanCount] = field(default_factory=list)
    audit_rows: int = 0


async def table_names(pool: Pool, *, timeout: float) -> set[str]:
    """Every ordinary or partitioned table of the schema that is not a scan partition."""
    async with acquire(pool, "list tables", timeout) as conn:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition",
            timeout=timeout,
        )
    return {r["relname"] for r in rows}


async def citizen_counts(pool: Pool, *, timeout: float) -> dict[str, int]:
    """Rows in each citizen table now (what a sunset would destroy)."""
    async with acquire(pool, "count citizen records", timeout) as conn:
        return await _counts(conn, timeout)


async def _counts(conn: Connection, timeout: float) -> dict[str, int]:
    counts = {}
    for table in CITIZEN_TABLES:  # constant names, not input
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}", timeout=timeout))  # noqa: S608
    return counts


async def _scan_counts(conn: Connection, timeout: float) -> list[ScanCount]:
    rows = await conn.fetch(
        "SELECT (s.scanned_at AT TIME ZONE 'UTC')::date AS day,"
        " coalesce(p.type, 'untyped') AS place_type, count(*) AS scans"
        " FROM scans s LEFT JOIN places p ON p.id = s.place"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        timeout=timeout,
    )
    return [ScanCount(r["day"].isoformat(), r["place_type"], int(r["scans"])) for r in rows]


async def _partitions(conn: Connection, timeout: float) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'scans'::regclass ORDER BY 1",
        timeout=timeout,
    )
    return [r["relname"] for r in rows]


async def _delete_redis(cache: Cache, *, timeout: float) -> dict[str, int]:
    """DEL every key of the prefix on every primary (a cluster client's SCAN walks them all);
    counts per key kind."""
    kinds: dict[str, int] = {}
    with redis_errors("sunset: delete keys"):
        keys = [
            k
            async for k in cache.client.scan_iter(match=cache.key_pattern(), count=REDIS_SCAN_COUNT)
        ]
        for at in range(0, len(keys), REDIS_CHUNK):
            chunk = [k.decode() if isinstance(k, bytes) else k for k in keys[at : at + REDIS_CHUNK]]
            replies = await cache.transport.execute(
                [(("DEL", key), key) for key in chunk], timeout=timeout
            )
            for key, reply in zip(chunk, replies, strict=True):
                if int(reply):
                    kind = cache.key_kind(key)
                    kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


async def destroy_all(
    pool: Pool,
    cache: Cache,
    *,
    at: datetime,
    actor: str,
    deployment: str,
    timeout: float,
) -> Destroyed:
    """The sunset, in one transaction: count what is there, keep the scans' counts per day and
    place type (stamped ``at``), empty every citizen table (every day partition of the scan log
    dropped), clear risk markings' subject cursors, delete every Redis key of the prefix, and
    commit with the audit entry. Any failure rolls PostgreSQL back whole."""
    async with acquire(pool, "sunset", timeout) as conn, conn.transaction():
        tables = ", ".join(CITIZEN_TABLES)
        # Nothing may write between the counts and the TRUNCATE (it would take these locks
        # anyway; taking them first makes the counts the truth of what went).
        await conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE", timeout=timeout)
        rows = await _counts(conn, timeout)
        scan_counts = await _scan_counts(conn, timeout)
        await conn.executemany(
            "INSERT INTO sunset_scan_counts (sunset_at, day, place_type, scans)"
            " VALUES ($1, $2::text::date, $3, $4)",
            [(at, c.day, c.place_type, c.scans) for c in scan_counts],
            timeout=timeout,
        )
        await conn.execute(f"TRUNCATE {tables}", timeout=timeout)
        partitions = await _partitions(conn, timeout)
        for name in partitions:  # names read from the catalog, not input
            await conn.execute(f'DROP TABLE "{name}"', timeout=timeout)
        rows["scan_partitions"] = len(partitions)
        await conn.execute(
            "UPDATE risk_places SET cursor_subject = NULL WHERE cursor_subject IS NOT NULL",
            timeout=timeout,
        )
        await catalogs.bump(conn, Catalog.CARDS, timeout=timeout)  # replicas forget revoked cards
        redis_keys = await _delete_redis(cache, timeout=timeout)
        await audit.append(
            conn,
            actor=actor,
            action="sunset.run",
            target={
                "deployment": deployment,
                "destroyed": rows,
                "redis_keys": redis_keys,
                "scan_counts_kept": len(scan_counts),
            },
            rows=sum(n for table, n in rows.items() if table != "scan_partitions"),
        )
        audit_rows = int(await conn.fetchval("SELECT count(*) FROM audit_log", timeout=timeout))
    return Destroyed(rows, redis_keys, scan_counts, audit_rows)


async def refuse(pool: Pool, *, actor: str, given: str | None, timeout: float) -> None:
    """Record a sunset refused for a confirmation that does not name the deployment (the name
    given is not kept: it may be anything an operator typed)."""
    await audit.record(
        pool,
        actor=actor,
        action="sunset.run",
        target={"refused": "confirmation does not name the deployment", "given": given is not None},
        outcome="denied",
        timeout=timeout,
    )


async def kept_scan_counts(pool: Pool, *, timeout: float) -> list[tuple[datetime, ScanCount]]:
    """Every count kept by a sunset, oldest sunset first."""
    async with acquire(pool, "read sunset counts", timeout) as conn:
        rows = await conn.fetch(
            "SELECT sunset_at, day, place_type, scans FROM sunset_scan_counts"
            " ORDER BY sunset_at, day, place_type",
            timeout=timeout,
        )
    return [
        (r["sunset_at"], ScanCount(r["day"].isoformat(), r["place_type"], int(r["scans"])))
        for r in rows
    ]
