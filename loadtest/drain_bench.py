"""Time ``ScanDrain.drain_all()`` alone, reproducibly: a throwaway database, a fresh Redis prefix.

``make bench`` measures the drain over whatever its verify runs left in the stream, on a
database that keeps every earlier run's scans. This script isolates it: it creates a database
(``CREATE DATABASE``, migrated with :func:`passcode.store.pg.migrate`), registers one terminal,
fills the stream shards with ``--scans`` entries written exactly as the verify path writes them
(:func:`passcode.store.scans.encode_record`; a status snapshot ``sc``/``sv`` plus ``r`` for a
valid pass, ``r`` alone with its decision for the rest), then times ``drain_all()`` of the
service's own drain (:func:`passcode.app.make_drain`), checks the row count, deletes its keys and
drops its database.

    .venv/bin/python -m loadtest.drain_bench [--scans 200000] [--repeat 3] [--preload 0]
                                             [--decided 0.05] [--writers N] [--random-ids]

Scan ids are time-ordered (version 7) as the service makes them, in the preloaded rows too;
``--random-ids`` makes them all random (version 4), as a terminal sending its own may: compare
the two with ``--preload 1500000`` to see what ordered ids save once a partition is large.

Each run prints rows/s and the CPU time per row of this process and of its Postgres backends
(read from ``/proc`` when Postgres runs on this machine), which stay comparable when other load
makes the rate noisy; the last line is the median rate.

``PASSCODE_DATABASE_URL`` / ``PASSCODE_REDIS_URL`` name the servers (default: this machine's own
on 127.0.0.1); every other ``PASSCODE_*`` setting (``PASSCODE_DRAIN_BATCH``,
``PASSCODE_SCAN_SHARDS``, ...) applies as it would to the service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loadtest.throwaway import throwaway_stores
from passcode.cli import new_event_loop
from passcode.config import Settings
from passcode.domain.model import Decision, Reason
from passcode.domain.verdict import Verdict
from passcode.service.verify import ScanIds
from passcode.store import pg
from passcode.store.cache import Cache
from passcode.store.scans import encode_record
from passcode.store.terminals import add_terminal
from passcode.wiring import make_drain, open_cache

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SUBJECTS = 2000  # as many citizens as ``make bench`` seeds
FILL_BATCH = 5000


def _entries(
    count: int,
    terminal_id: str,
    cache: Cache,
    decided_share: float,
    start_ms: int,
    *,
    random_ids: bool,
) -> list[tuple[int, dict[str, str | int]]]:
    """``count`` stream entries as (shard, fields), a scan per 20 µs from ``start_ms``."""
    rng = random.Random(7)
    subjects = [rng.randbytes(16) for _ in range(SUBJECTS)]
    ids = ScanIds()
    out: list[tuple[int, dict[str, str | int]]] = []
    for n in range(count):
        at_ms = start_ms + n // 50
        scan_id = (
            uuid.UUID(int=rng.getrandbits(128), version=4)
            if random_ids
            else uuid.UUID(ids.next(at_ms / 1000))
        )
        terminal_time = (
            datetime.fromtimestamp(at_ms / 1000, UTC) - timedelta(seconds=3) if n % 3 == 0 else None
        )
        if rng.random() < decided_share:  # an invalid code: its decision, on the scan id's shard
            record = encode_record(
                scan_id=str(scan_id),
                at_ms=at_ms,
                terminal_time=terminal_time,
                terminal_id=terminal_id,
                subject=None,
                pass_version=0,
                verdict=Verdict(Decision.INVALID, Reason.MALFORMED, None),
            )
            out.append((cache.shard_of(scan_id.bytes), {"r": record}))
            continue
        subject = rng.choice(subjects)  # a valid pass: the script's status snapshot
        record = encode_record(
            scan_id=str(scan_id),
            at_ms=at_ms,
            terminal_time=terminal_time,
            terminal_id=terminal_id,
            subject=subject,
            pass_version=1,
            verdict=None,
        )
        out.append((cache.shard_of(subject), {"sc": "green", "sv": 1, "r": record}))
    return out


async def _fill(cache: Cache, entries: list[tuple[int, dict[str, str | int]]]) -> None:
    client = cache.client
    for start in range(0, len(entries), FILL_BATCH):
        pipe = client.pipeline(transaction=False)
        for shard, fields in entries[start : start + FILL_BATCH]:
            pipe.xadd(cache.stream_key(shard), fields)  # type: ignore[arg-type]
        await pipe.execute()


# A version 7 UUID for the row's time (ms) and position ``g`` (the rest of its bits from md5).
_ORDERED_ID = (
    "(lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0')"
    " || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid"
)


async def _preload(pool: pg.Pool, rows: int, terminal_id: uuid.UUID, *, random_ids: bool) -> None:
    """Rows already in ``scans`` (today's partition), as a day of earlier traffic leaves."""
    if rows <= 0:
        return
    async with pool.acquire(timeout=30) as conn:
        now = datetime.now(UTC)
        day = now.date()
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS scans_{day:%Y%m%d} PARTITION OF scans FOR VALUES"
            f" FROM ('{day.isoformat()}T00:00:00+00:00')"
            f" TO ('{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00')"
        )
        scan_id = "gen_random_uuid()" if random_ids else _ORDERED_ID
        await conn.execute(
            f"INSERT INTO scans SELECT t, {scan_id}, NULL, $2, 'bench place', NULL,"  # noqa: S608  # constant SQL
            " 'admit', 'ok', 'green'"
            " FROM generate_series(1, $3) AS g,"
            " LATERAL (SELECT $1::timestamptz - g * interval '1 ms' AS t) AS at",
            now - timedelta(minutes=1),
            terminal_id,
            rows,
            timeout=3600,
        )
        await conn.execute("ANALYZE scans", timeout=600)


def _busy(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over ``seconds``: anything else running makes numbers noisy."""

    def sample() -> tuple[int, int]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a local process, 0 when it is not readable (a remote server)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _backend_cpu(pool: pg.Pool, pids: dict[int, float]) -> dict[int, float]:
    """CPU seconds so far of every backend of this database (Postgres on this machine)."""
    async with pool.acquire(timeout=30) as conn:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
    for row in rows:
        pids.setdefault(row["pid"], 0.0)
    return {pid: _cpu_seconds(pid) for pid in pids}


async def one_run(
    base: Settings,
    count: int,
    decided_share: float,
    preload: int,
    writers: int,
    *,
    random_ids: bool,
) -> float:
    """Fill, drain, check, clean up; returns rows/s."""
    async with throwaway_stores(base, "drainbench") as settings:
        assert settings.database_url is not None
        pool = await pg.create_pool(
            settings.database_url,
            timeout=settings.pg_timeout,
            min_size=settings.pg_pool_min,
            max_size=settings.pg_pool_max,
        )
        cache = open_cache(settings)
        try:
            await pg.migrate(pool)
            await cache.check_layout()
            terminal = await add_terminal(pool, "drain bench", timeout=10)
            await _preload(pool, preload, terminal.id, random_ids=random_ids)
            drain = make_drain(settings, pool, cache)
            if writers:
                drain.writers = writers
            await drain.ensure_groups()
            entries = _entries(
                count,
                str(terminal.id),
                cache,
                decided_share,
                int(time.time() * 1000) - 10_000,
                random_ids=random_ids,
            )
            await _fill(cache, entries)
            del entries
            busy = _busy()
            before = await _backend_cpu(pool, {})
            cpu_started = time.process_time()
            started = time.perf_counter()
            moved = await drain.drain_all()
            seconds = time.perf_counter() - started
            own_cpu = time.process_time() - cpu_started
            after = await _backend_cpu(pool, dict(before))
            pg_cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
            left = sum([int(await cache.client.xlen(s)) for s in cache.stream_keys()])
            async with pool.acquire(timeout=30) as conn:
                stored = int(
                    await conn.fetchval(
                        "SELECT count(*) FROM scans WHERE place = 'drain bench'", timeout=120
                    )
                )
            rate = drain.stored / seconds
            writers = getattr(drain, "writers", 1)  # absent before the drain had several
            print(
                f"drained {moved:,} entries, {drain.stored:,} rows in {seconds:.2f}s"
                f" = {rate:,.0f} rows/s (batch {settings.drain_batch},"
                f" {settings.scan_shards} shards, {writers} writers, preload {preload:,},"
                f" {'random' if random_ids else 'time-ordered'} ids);"
                f" CPU per row: drain {own_cpu / count * 1e6:.1f} µs,"
                f" postgres {pg_cpu / count * 1e6:.1f} µs; machine {busy:.0%} busy before"
            )
            if not moved == drain.stored == stored == count or left:
                raise SystemExit(
                    f"CHECK FAILED: {count} entries written, {moved} drained, {drain.stored} stored"
                    f" by the drain, {stored} rows in scans, {left} left in the streams"
                )
            return rate
        finally:
            await cache.close()
            await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scans", type=int, default=200_000, help="stream entries to drain")
    parser.add_argument("--repeat", type=int, default=3, help="runs, each on a fresh database")
    parser.add_argument(
        "--decided", type=float, default=0.05, help="share of entries with their own decision"
    )
    parser.add_argument(
        "--preload", type=int, default=0, help="rows already in scans before the drain"
    )
    parser.add_argument(
        "--writers", type=int, default=0, help="the drain's concurrent transactions (0: its own)"
    )
    parser.add_argument(
        "--random-ids", action="store_true", help="random (version 4) scan ids, not ordered"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("PASSCODE_DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("PASSCODE_REDIS_URL", DEFAULT_REDIS_URL)
    settings = Settings.from_env(env)
    rates = [
        await one_run(
            settings,
            args.scans,
            args.decided,
            args.preload,
            args.writers,
            random_ids=args.random_ids,
        )
        for _ in range(args.repeat)
    ]
    rates.sort()
    shown = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"median {rates[len(rates) // 2]:,.0f} rows/s over {len(rates)} runs: {shown}")


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the service's own loop
        runner.run(main())
