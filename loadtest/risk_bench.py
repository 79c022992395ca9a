"""Time a risk-place job (时空伴随) end to end: 100k citizens who scanned at one place.

Creates a throwaway database (``CREATE DATABASE`` on the server ``PASSCODE_DATABASE_URL``
names, migrated with :func:`passcode.store.pg.migrate`, dropped at the end) and a fresh Redis
key prefix (its keys deleted at the end). Seeds ``--subjects`` citizens at COPY speed, each
with a healthy declaration and its green status (version 1) in Postgres and Redis, and one scan
at the place inside the window; ``--noise`` more scans by the same citizens land elsewhere in
the window and at the place before it. Then marks the place and times the service's own job
(:func:`passcode.service.riskplaces.run_marking`, ``PASSCODE_RISK_CHUNK`` subjects per
transaction) from start to done; checks every citizen is yellow with version 2 in Postgres and
Redis; then runs the same marking again from scratch (the idempotent re-run: nothing may
change) and marks the same place and window once more (the existing marking comes back).

    PASSCODE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    PASSCODE_REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python -m loadtest.risk_bench [--subjects 100000] [--noise 100000]

(``make risk-bench`` runs it with embedded servers when the URLs are unset.) Prints a table:
subjects, seconds, subjects/s, and the Postgres rows changed: exposures inserted, status rows
written (each also marked in sync with Redis afterwards), versions bumped; and Redis writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from loadtest.throwaway import throwaway_stores
from passcode.cli import new_event_loop
from passcode.config import Settings
from passcode.domain.model import Color, StatusReason
from passcode.domain.status import LiveStatus
from passcode.seed import Chunk, copy_chunk
from passcode.service.riskplaces import JobReport, run_marking
from passcode.store import pg, riskplaces
from passcode.store.cache import Cache
from passcode.store.scans import COLUMNS, ensure_partitions
from passcode.wiring import open_cache

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PLACE = "Bench Mall, Gate 1"
COPY_TIMEOUT = 600.0
JOB_TIMEOUT = 60.0


async def _seed(
    pool: pg.Pool, cache: Cache, settings: Settings, *, subjects: int, noise: int, now: datetime
) -> tuple[datetime, datetime]:
    """Citizens, declarations, green statuses (Postgres and Redis) and scans; returns the
    window to mark."""
    rng = random.Random(5)
    ids = sorted(rng.randbytes(16) for _ in range(subjects))
    declared_at = now - timedelta(minutes=10)
    valid_until = declared_at + settings.policy().declaration_ttl
    since, until = now - timedelta(hours=3), now - timedelta(hours=1)
    await copy_chunk(
        pool,
        Chunk(
            subjects=[(s, rng.randbytes(32), rng.randbytes(40), "张*三", declared_at) for s in ids],
            declarations=[
                (s, b"\0" * 32, Decimal("36.5"), [], [], False, declared_at) for s in ids
            ],
            statuses=[
                (s, "green", StatusReason.DECLARED_HEALTHY.value, valid_until, 1, 1, now)
                for s in ids
            ],
        ),
    )
    async with pg.acquire(pool, "seed scans", COPY_TIMEOUT) as conn:
        terminal = uuid.uuid4()
        span = (until - since).total_seconds()

        def scan(subject: bytes, place: str, at: datetime) -> tuple[object, ...]:
            return (at, uuid.uuid4(), None, terminal, place, subject, "admit", "ok", "green", False)

        rows = [
            scan(s, PLACE, since + timedelta(seconds=rng.uniform(0, span * 0.999))) for s in ids
        ]
        for n in range(noise):  # elsewhere in the window, or at the place before it
            subject = ids[n % subjects]
            if n % 2:
                rows.append(scan(subject, "Elsewhere", since + timedelta(seconds=n % int(span))))
            else:
                rows.append(scan(subject, PLACE, since - timedelta(seconds=1 + n % 3600)))
        days = {(since - timedelta(hours=2)).date(), since.date(), until.date()}
        await ensure_partitions(conn, days)
        await conn.copy_records_to_table(
            "scans", records=rows, columns=COLUMNS, timeout=COPY_TIMEOUT
        )
        await conn.execute("ANALYZE", timeout=COPY_TIMEOUT)
    live = LiveStatus(Color.GREEN, 1, int(valid_until.timestamp()), "张*三")
    await cache.put_statuses([(s, live) for s in ids])
    return since, until


def _row(name: str, subjects: int, report: JobReport) -> str:
    rate = subjects / report.seconds if report.seconds else 0.0
    return (
        f"{name:<16} {subjects:>9,} {report.seconds:>8.2f} {rate:>11,.0f}"
        f" {report.exposures:>10,} {report.rows_written:>12,} {report.versions_bumped:>9,}"
        f" {report.redis_writes:>12,}"
    )


async def _check(pool: pg.Pool, cache: Cache, subjects: int) -> None:
    """Every citizen yellow with version 2, in sync, in Postgres and (a sample) in Redis."""
    async with pg.acquire(pool, "check", COPY_TIMEOUT) as conn:
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE color = 'yellow' AND version = 2"
            " AND cached_version = 2) AS yellow, count(*) AS total FROM statuses",
            timeout=COPY_TIMEOUT,
        )
        sample = [
            r["subject_id"]
            for r in await conn.fetch(
                "SELECT subject_id FROM statuses ORDER BY random() LIMIT 1000",
                timeout=COPY_TIMEOUT,
            )
        ]
    hot = [await cache.get_status(s) for s in sample]
    wrong = [h for h in hot if h is None or (h.color, h.version) != (Color.YELLOW, 2)]
    if counts["yellow"] != subjects or wrong:
        raise SystemExit(
            f"CHECK FAILED: {counts['yellow']} of {counts['total']} statuses yellow v2 in"
            f" Postgres; {len(wrong)} of {len(hot)} sampled wrong in Redis"
        )


async def run(base: Settings, *, subjects: int, noise: int) -> None:
    async with throwaway_stores(base, "riskbench") as settings:
        assert settings.database_url is not None
        pool = await pg.create_pool(
            settings.database_url, timeout=settings.pg_timeout, min_size=1, max_size=4
        )
        cache = open_cache(settings)
        try:
            await pg.migrate(pool)
            await cache.check_layout()
            now = datetime.now(UTC)
            started = time.perf_counter()
            since, until = await _seed(
                pool, cache, settings, subjects=subjects, noise=noise, now=now
            )
            print(
                f"seeded {subjects:,} citizens and {subjects + noise:,} scans in"
                f" {time.perf_counter() - started:.1f} s; chunk {settings.risk_chunk}",
                flush=True,
            )
            marking, _ = await riskplaces.create_marking(
                pool,
                place=PLACE,
                since=since,
                until=until,
                color=Color.YELLOW,
                note="bench",
                exposure_until=None,
                created_by="risk_bench",
                timeout=settings.pg_timeout,
            )

            async def job() -> JobReport:
                return await run_marking(
                    pool,
                    cache,
                    marking.id,
                    policy=settings.policy(),
                    chunk=settings.risk_chunk,
                    timeout=JOB_TIMEOUT,
                )

            first = await job()
            if (first.state, first.affected, first.processed) != ("done", subjects, subjects):
                raise SystemExit(f"CHECK FAILED: first run {first}")
            await _check(pool, cache, subjects)
            async with pg.acquire(pool, "reset", settings.pg_timeout) as conn:
                await conn.execute(
                    "UPDATE risk_places SET state = 'pending', cursor_subject = NULL, processed = 0"
                    " WHERE id = $1",
                    marking.id,
                )
            second = await job()
            if (second.exposures, second.rows_written, second.versions_bumped) != (0, 0, 0):
                raise SystemExit(f"CHECK FAILED: the re-run changed something: {second}")
            await _check(pool, cache, subjects)
            same, created = await riskplaces.create_marking(
                pool,
                place=PLACE,
                since=since,
                until=until,
                color=Color.YELLOW,
                note="bench again",
                exposure_until=None,
                created_by="risk_bench",
                timeout=settings.pg_timeout,
            )
            if created or same.id != marking.id:
                raise SystemExit("CHECK FAILED: marking again made a new marking")
            print(
                f"{'run':<16} {'subjects':>9} {'seconds':>8} {'subjects/s':>11}"
                f" {'exposures':>10} {'status rows':>12} {'versions':>9} {'redis writes':>12}"
            )
            print(_row("first", subjects, first))
            print(_row("re-run (idem.)", subjects, second))
            print("marking again: the existing marking, no new work")
            verdict = "under" if first.seconds < 10 else "OVER"
            print(f"goal: 100k in under 10 s; first run {first.seconds:.2f} s ({verdict})")
        finally:
            await cache.close()
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument(
        "--noise", type=int, default=100_000, help="scans elsewhere or outside the window"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("PASSCODE_DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("PASSCODE_REDIS_URL", DEFAULT_REDIS_URL)
    settings = Settings.from_env(env)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the service's own loop
        runner.run(run(settings, subjects=args.subjects, noise=args.noise))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
