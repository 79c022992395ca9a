"""Contact tracing over a full retention period of scans: 10M scans in 28 day partitions.

Creates a throwaway database (``CREATE DATABASE``, migrated with
:func:`passcode.store.pg.migrate`, dropped at the end), generates subjects and scans server-side
(``INSERT ... SELECT generate_series``; two loaders, one day partition per statement), runs
``VACUUM (ANALYZE)``, then times the queries the tracing endpoints run, through the same
functions (:mod:`passcode.store.tracing`):

- place, 28 days, first page of 100: the busiest place and a typical one;
- place, 28 days, every match, walked in pages of 1000 (the API's largest): how long reading
  all of a place's scans takes, and how many there are;
- place, one day, first page of 100 (the busiest place);
- citizen, 28 days: the subject lookup and their scans (one page of 100).

Places are skewed (place ``k`` of ``n`` drawn as ``floor(n * random()^2)``): the busiest place
gets about 2% of all scans (~220k over 28 days), a typical one a few thousand. 5% of scans are
invalid codes (no subject). Each query runs ``--runs`` times (the median and the maximum are
reported) and once under ``EXPLAIN (ANALYZE, BUFFERS)``, summarized: plan root, indexes used,
partitions scanned, buffers, execution time.

    .venv/bin/python -m loadtest.trace_bench [--scans 10000000] [--days 28] [--places 2000]
                                             [--subjects 500000] [--runs 7] [--keep]

``PASSCODE_DATABASE_URL`` names the server (default: this machine's on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from loadtest.throwaway import create_database, drop_database, with_database
from passcode.store import pg
from passcode.store.scans import ensure_partitions
from passcode.store.statuses import find_subject
from passcode.store.tracing import (
    NIL,
    PLACE_QUERY,
    SUBJECT_QUERY,
    scans_at_place,
    scans_of_subject,
)

# The place query's own condition, counted (the API pages; this is what "all matches" costs).
COUNT_AT_PLACE = (
    "SELECT count(*) FROM scans WHERE place = $1 AND scanned_at >= $2 AND scanned_at < $3"
)
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOADERS = 2  # the machine's CPUs
TIMEOUT = 60.0  # per query: a slow one is measured, not failed

_SUBJECTS = (
    "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked)"
    " SELECT decode(md5('s' || g), 'hex'), sha256(convert_to('bench-user-' || g, 'UTF8')),"
    " sha256(convert_to('sealed-' || g, 'UTF8')), '张*三'"
    " FROM generate_series(0, $1::int - 1) AS g"
)
# One day: scans evenly spread over it, at skewed places, by uniformly drawn subjects.
_SCANS = (
    "INSERT INTO scans (scanned_at, scan_id, terminal_id, place, subject_id, decision, reason,"
    " color)"
    " SELECT $1::timestamptz + (g - $2) * $3::interval, gen_random_uuid(), md5('t' || p)::uuid,"
    " 'Place ' || lpad(p::text, 4, '0'),"
    " CASE WHEN valid THEN decode(md5('s' || s), 'hex') END,"
    " CASE WHEN valid THEN 'admit' ELSE 'invalid' END,"
    " CASE WHEN valid THEN 'ok' ELSE 'malformed' END,"
    " CASE WHEN valid THEN 'green' END"
    " FROM (SELECT g, floor($4::int * random() ^ 2)::int AS p,"
    "  floor($5::int * random())::int AS s, random() < 0.95 AS valid"
    "  FROM generate_series($2::bigint, $6::bigint - 1) AS g) AS x"
)


def place_name(k: int) -> str:
    return f"Place {k:04d}"


def user_hash(n: int) -> bytes:
    """As the subjects were generated (a stand-in for the service's keyed hash)."""
    return hashlib.sha256(f"bench-user-{n}".encode()).digest()


async def load(pool: pg.Pool, args: argparse.Namespace, first: date) -> None:
    started = time.perf_counter()
    async with pool.acquire(timeout=30) as conn:
        await conn.execute(_SUBJECTS, args.subjects, timeout=3600)
        await ensure_partitions(conn, (first + timedelta(days=d) for d in range(args.days)))
    print(f"{args.subjects:,} subjects in {time.perf_counter() - started:.1f} s", flush=True)

    per_day = args.scans // args.days
    queue: asyncio.Queue[int] = asyncio.Queue()
    for day in range(args.days):
        queue.put_nowait(day)
    loaded = 0

    async def loader() -> None:
        nonlocal loaded
        async with pool.acquire(timeout=30) as conn:
            while not queue.empty():
                day = queue.get_nowait()
                lo = day * per_day
                hi = args.scans if day == args.days - 1 else lo + per_day
                await conn.execute(
                    _SCANS,
                    datetime.combine(first + timedelta(days=day), datetime.min.time(), UTC),
                    lo,
                    timedelta(days=1) / (hi - lo),
                    args.places,
                    args.subjects,
                    hi,
                    timeout=3600,
                )
                loaded += hi - lo
                elapsed = time.perf_counter() - started
                print(
                    f"  day {day + 1:2d}/{args.days}: {loaded:,} scans in {elapsed:.0f} s"
                    f" ({loaded / elapsed:,.0f}/s)",
                    flush=True,
                )

    await asyncio.gather(*(loader() for _ in range(LOADERS)))
    print(f"loaded {loaded:,} scans in {time.perf_counter() - started:.0f} s", flush=True)
    vacuumed = time.perf_counter()
    async with pool.acquire(timeout=30) as conn:
        await conn.execute("VACUUM (ANALYZE) subjects", timeout=3600)
        await conn.execute("VACUUM (ANALYZE) scans", timeout=3600)
        size = await conn.fetchval(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits"
            " WHERE inhparent = 'scans'::regclass"
        )
    print(f"VACUUM (ANALYZE) in {time.perf_counter() - vacuumed:.0f} s; scans take {size}")


@dataclass
class Case:
    name: str
    run: Callable[[], Awaitable[int]]  # returns rows read
    explain_sql: str
    explain_args: Sequence[Any]


def _plan_summary(plan: dict[str, Any]) -> str:
    """Root node and its actual time, indexes used, partitions planned / executed / pruned at
    run time (an ordered Append stops early: the rest show as never executed), buffers."""
    indexes: set[str] = set()
    planned: set[str] = set()
    executed: set[str] = set()
    removed = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal removed
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        if node.get("Relation Name", "").startswith("scans_"):
            planned.add(node["Relation Name"])
            if node.get("Actual Loops", 0):
                executed.add(node["Relation Name"])
        removed += int(node.get("Subplans Removed", 0))
        for child in node.get("Plans", []):
            walk(child)

    root = plan["Plan"]
    walk(root)
    kinds = sorted(
        {name.split("_", 2)[-1] if name.startswith("scans_") else name for name in indexes}
    )
    return (
        f"{root['Node Type']} rows={root['Actual Rows']} {root['Actual Total Time']:.2f} ms;"
        f" indexes {', '.join(kinds)}; partitions in plan {len(planned)}, executed"
        f" {len(executed)}, pruned at run time {removed};"
        f" buffers hit {root.get('Shared Hit Blocks', 0)} read {root.get('Shared Read Blocks', 0)};"
        f" planning {plan.get('Planning Time', 0):.2f} ms, execution {plan['Execution Time']:.2f} ms"
    )


async def explain(pool: pg.Pool, sql: str, args: Sequence[Any]) -> str:
    async with pool.acquire(timeout=30) as conn:
        raw = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args, timeout=TIMEOUT
        )
    return _plan_summary(json.loads(raw)[0])


async def measure(pool: pg.Pool, cases: list[Case], runs: int) -> None:
    print(f"\n{'query':<52} {'median':>9} {'max':>9} {'rows':>9}")
    for case in cases:
        seconds: list[float] = []
        rows = 0
        for _ in range(runs):
            started = time.perf_counter()
            rows = await case.run()
            seconds.append(time.perf_counter() - started)
        print(
            f"{case.name:<52} {statistics.median(seconds) * 1000:>7.1f}ms"
            f" {max(seconds) * 1000:>7.1f}ms {rows:>9,}",
            flush=True,
        )
    print("\nEXPLAIN (ANALYZE, BUFFERS), one run each (a walk: its first page):")
    for case in cases:
        print(f"- {case.name}: {await explain(pool, case.explain_sql, case.explain_args)}")


def cases(pool: pg.Pool, first: date, args: argparse.Namespace) -> list[Case]:
    since = datetime.combine(first, datetime.min.time(), UTC)
    until = since + timedelta(days=args.days)
    last_day = until - timedelta(days=1)
    hot, typical = place_name(0), place_name(args.places // 2)
    citizen = args.subjects // 3

    def first_page(place: str, start: datetime, end: datetime) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            found = await scans_at_place(
                pool, place=place, since=start, until=end, after=None, limit=100, timeout=TIMEOUT
            )
            return len(found)

        return run

    def walk(place: str) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            total, after = 0, None
            while True:
                found = await scans_at_place(
                    pool,
                    place=place,
                    since=since,
                    until=until,
                    after=after,
                    limit=1000,
                    timeout=TIMEOUT,
                )
                total += len(found)
                if len(found) < 1000:
                    return total
                after = found[-1]

        return run

    async def count(place: str) -> int:
        async with pool.acquire(timeout=30) as conn:
            found: int = await conn.fetchval(COUNT_AT_PLACE, place, since, until, timeout=TIMEOUT)
        return found

    async def trace_citizen() -> int:
        subject = await find_subject(pool, user_hash(citizen), timeout=TIMEOUT)
        assert subject is not None
        found = await scans_of_subject(
            pool,
            subject_id=subject,
            since=since,
            until=until,
            after=None,
            limit=100,
            timeout=TIMEOUT,
        )
        return len(found)

    subject_id = hashlib.md5(f"s{citizen}".encode()).digest()  # noqa: S324  # as generated
    place_args = (since, until, NIL)
    return [
        Case(
            f"place, {args.days} d, first 100 (busiest place)",
            first_page(hot, since, until),
            PLACE_QUERY,
            (hot, *place_args, 100),
        ),
        Case(
            f"place, {args.days} d, first 100 (typical place)",
            first_page(typical, since, until),
            PLACE_QUERY,
            (typical, *place_args, 100),
        ),
        Case(
            f"place, {args.days} d, count of all matches (busiest)",
            lambda: count(hot),
            COUNT_AT_PLACE,
            (hot, since, until),
        ),
        Case(
            f"place, {args.days} d, every match (busiest, pages of 1000)",
            walk(hot),
            PLACE_QUERY,
            (hot, *place_args, 1000),
        ),
        Case(
            f"place, {args.days} d, every match (typical, pages of 1000)",
            walk(typical),
            PLACE_QUERY,
            (typical, *place_args, 1000),
        ),
        Case(
            "place, 1 d, first 100 (busiest place)",
            first_page(hot, last_day, until),
            PLACE_QUERY,
            (hot, last_day, until, NIL, 100),
        ),
        Case(
            f"citizen, {args.days} d (lookup + scans, page of 100)",
            trace_citizen,
            SUBJECT_QUERY,
            (subject_id, *place_args, 100),
        ),
    ]


async def main(args: argparse.Namespace) -> None:
    base = os.environ.get("PASSCODE_DATABASE_URL") or DEFAULT_DATABASE_URL
    name = args.reuse or await create_database(base, "tracebench")
    print(f"database {name}: {args.scans:,} scans over {args.days} days", flush=True)
    pool = await pg.create_pool(
        with_database(base, name), timeout=10, min_size=1, max_size=LOADERS + 1
    )
    try:
        await pg.migrate(pool)
        if args.reuse:
            first = await pool.fetchval("SELECT min(scanned_at) FROM scans")
            first = first.astimezone(UTC).date()
        else:
            first = datetime.now(UTC).date() - timedelta(days=args.days - 1)
            await load(pool, args, first)
        await measure(pool, cases(pool, first, args), args.runs)
    finally:
        await pool.close()
        if args.keep or args.reuse:
            print(f"kept database {name} (drop it with: DROP DATABASE {name})")
        else:
            await drop_database(base, name)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--scans", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--places", type=int, default=2000)
    p.add_argument("--subjects", type=int, default=500_000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the database (to inspect it)")
    p.add_argument("--reuse", metavar="DATABASE", help="measure a kept database again, no load")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
