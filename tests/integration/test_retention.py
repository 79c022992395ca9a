"""Scan retention (issue 5) on the real PostgreSQL: day partitions wholly older than the period
are dropped with their scans, recent ones stay; by the store function, by the service's
scheduled job and by ``passcode retention run``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest

from passcode.app import create_app
from passcode.config import Settings, SettingsError
from passcode.domain.clock import SYSTEM_CLOCK
from passcode.store import pg
from passcode.store.retention import expire_scans, retention_cutoff
from passcode.store.scans import ScanRow, insert_scans, partition_name
from passcode.workers.retention import expire_now, run_retention
from tests.helpers import cli

DAYS = 28
OLD, RECENT = (40, 29), (27, 0)  # days ago


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[pg.Pool]:
    assert settings.database_url is not None
    made = await pg.create_pool(settings.database_url, timeout=5, min_size=1, max_size=4)
    await pg.migrate(made)
    try:
        yield made
    finally:
        await made.close()


def day_ago(days: int) -> date:
    return (datetime.now(UTC) - timedelta(days=days)).date()


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


async def store_scans(pool: pg.Pool, days_ago: tuple[int, ...], per_day: int = 3) -> str:
    """``per_day`` scans at noon of each of those days, at a place of their own (returned)."""
    place = f"Retention {uuid.uuid4().hex[:8]}"
    rows = [
        ScanRow(
            scanned_at=noon(day_ago(n)) + timedelta(seconds=i),
            scan_id=uuid.uuid4(),
            terminal_time=None,
            terminal_id=uuid.uuid4(),
            place=place,
            subject_id=None,
            decision="invalid",
            reason="malformed",
            color=None,
        )
        for n in days_ago
        for i in range(per_day)
    ]
    assert await insert_scans(pool, rows, timeout=5, dedupe_window=60) == len(rows)
    return place


async def scans_by_day(pool: pg.Pool, place: str) -> dict[date, int]:
    rows = await pool.fetch(
        "SELECT (scanned_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM scans"
        " WHERE place = $1 GROUP BY 1",
        place,
    )
    return {r["day"]: r["n"] for r in rows}


async def partition_exists(pool: pg.Pool, day: date) -> bool:
    found = await pool.fetchval("SELECT to_regclass($1)", partition_name(day))
    return found is not None


async def partition_rows(pool: pg.Pool, day: date) -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {partition_name(day)}")  # noqa: S608  # our own partition name
    return count


async def test_partitions_past_the_period_are_dropped_and_recent_ones_stay(pool: pg.Pool) -> None:
    """Scans 40 and 29 days old go with their day partitions (the report names each with its
    row count); scans 27 days old and of today stay, partitions and rows alike."""
    place = await store_scans(pool, OLD + RECENT)
    counts = {n: await partition_rows(pool, day_ago(n)) for n in OLD}
    report = await expire_now(pool, days=DAYS, clock=SYSTEM_CLOCK, timeout=5)

    dropped = {d.partition: d.rows for d in report.dropped}
    for n in OLD:
        assert dropped[partition_name(day_ago(n))] == counts[n] >= 3
        assert not await partition_exists(pool, day_ago(n))
    for n in RECENT:
        assert partition_name(day_ago(n)) not in dropped
        assert await partition_exists(pool, day_ago(n))
    assert await scans_by_day(pool, place) == {day_ago(n): 3 for n in RECENT}
    assert report.scans.skipped == ()
    assert "dropped" in report.summary()


async def test_the_cutoff_keeps_a_day_until_its_end_has_passed(pool: pg.Pool) -> None:
    """A day partition goes once its end is at or before now minus the period: with the cutoff
    exactly at the end of a day, that day is dropped and the next one, a microsecond younger
    at its start, is kept."""
    place = await store_scans(pool, (35, 34))
    end_of_35 = datetime.combine(day_ago(34), time(), tzinfo=UTC)
    report = await expire_scans(pool, cutoff=end_of_35, timeout=5)
    assert partition_name(day_ago(35)) in {d.partition for d in report.dropped}
    assert await scans_by_day(pool, place) == {day_ago(34): 3}
    report = await expire_scans(pool, cutoff=end_of_35 + timedelta(days=1), timeout=5)
    assert {d.partition for d in report.dropped} == {partition_name(day_ago(34))}
    assert await scans_by_day(pool, place) == {}


async def test_concurrent_runs_take_turns_and_drop_each_partition_once(pool: pg.Pool) -> None:
    """Three runs at once (replicas, the CLI): they serialize on the run lock, every old
    partition is dropped by exactly one of them, none fails; a later run finds nothing."""
    place = await store_scans(pool, (45, 44, 43, 1))
    reports = await asyncio.gather(
        *(expire_now(pool, days=DAYS, clock=SYSTEM_CLOCK, timeout=5) for _ in range(3))
    )
    names = [d.partition for r in reports for d in r.dropped]
    assert len(names) == len(set(names))
    assert {partition_name(day_ago(n)) for n in (45, 44, 43)} <= set(names)
    assert await scans_by_day(pool, place) == {day_ago(1): 3}
    again = await expire_now(pool, days=DAYS, clock=SYSTEM_CLOCK, timeout=5)
    assert (again.dropped, again.scans.deleted) == ((), 0)


async def test_a_partition_whose_lock_is_busy_is_left_for_the_next_run(
    pool: pg.Pool, settings: Settings
) -> None:
    """While a long query holds the scan table, the drop gives up after its lock timeout instead
    of queueing everyone behind it: the partition is reported as skipped and its scans stay;
    the next run, once the table is free, drops it."""
    place = await store_scans(pool, (50,))
    assert settings.database_url is not None
    blocker = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.fetchval("SELECT count(*) FROM scans WHERE place = $1", place)
        report = await expire_scans(
            pool, cutoff=retention_cutoff(datetime.now(UTC), DAYS), timeout=5, lock_timeout=0.2
        )
        assert partition_name(day_ago(50)) in report.skipped
        assert "left for the next run" in report.summary()
        assert await scans_by_day(pool, place) == {day_ago(50): 3}
        await transaction.rollback()
    finally:
        await blocker.close()
    report = await expire_now(pool, days=DAYS, clock=SYSTEM_CLOCK, timeout=5)
    assert partition_name(day_ago(50)) in {d.partition for d in report.dropped}
    assert await scans_by_day(pool, place) == {}


async def test_old_rows_in_a_default_partition_are_deleted(pool: pg.Pool) -> None:
    """Rows outside any day partition (an operator added a DEFAULT partition) cannot go with a
    day: those older than the cutoff are deleted, younger ones stay."""
    place = f"Retention default {uuid.uuid4().hex[:8]}"
    old, future = noon(day_ago(60)), noon(day_ago(-400))
    assert not await partition_exists(pool, old.date())
    await pool.execute("CREATE TABLE scans_retention_default PARTITION OF scans DEFAULT")
    try:
        for at in (old, future):
            await pool.execute(
                "INSERT INTO scans (scanned_at, scan_id, terminal_id, place, decision, reason)"
                " VALUES ($1, $2, $3, $4, 'invalid', 'malformed')",
                at,
                uuid.uuid4(),
                uuid.uuid4(),
                place,
            )
        report = await expire_now(pool, days=DAYS, clock=SYSTEM_CLOCK, timeout=5)
        assert report.scans.deleted == 1
        assert await scans_by_day(pool, place) == {future.date(): 1}
    finally:
        await pool.execute("DROP TABLE scans_retention_default")


async def test_the_service_expires_scans_at_start_up_and_on_its_schedule(
    aiohttp_client: Any, settings: Settings, pool: pg.Pool
) -> None:
    """A service started with old scans in the log has dropped them before it serves; scans that
    turn up past the period later are dropped by the scheduled job (a 0.2 s interval here);
    recent scans stay throughout."""
    before = await store_scans(pool, (40, 2))
    await aiohttp_client(create_app(dataclasses.replace(settings, retention_interval=0.2)))
    assert await scans_by_day(pool, before) == {day_ago(2): 3}
    assert not await partition_exists(pool, day_ago(40))

    later = await store_scans(pool, (33, 2))
    for _ in range(200):  # bounded: 10 s
        if not await partition_exists(pool, day_ago(33)):
            break
        await asyncio.sleep(0.05)
    assert not await partition_exists(pool, day_ago(33))
    assert await scans_by_day(pool, later) == {day_ago(2): 3}
    assert await scans_by_day(pool, before) == {day_ago(2): 3}


async def test_a_failing_run_is_logged_and_the_job_carries_on(
    pool: pg.Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With the database unreachable every run fails: each failure is logged and the job tries
    again at the next interval instead of ending; cancelling it stops it cleanly."""
    assert settings.database_url is not None
    broken = await pg.create_pool(settings.database_url, timeout=5, min_size=0, max_size=1)
    await broken.close()
    caplog.set_level(logging.ERROR, logger="passcode.workers.retention")
    job = asyncio.create_task(
        run_retention(broken, days=DAYS, interval=0.05, clock=SYSTEM_CLOCK, timeout=1)
    )
    for _ in range(200):  # bounded: 10 s
        if sum("retention run failed" in r.message for r in caplog.records) >= 3:
            break
        await asyncio.sleep(0.05)
    assert sum("retention run failed" in r.message for r in caplog.records) >= 3
    assert not job.done()
    job.cancel()
    await asyncio.wait({job})
    assert job.cancelled()


async def test_passcode_retention_run_drops_what_the_configured_period_says(
    settings: Settings, pool: pg.Pool
) -> None:
    """`passcode retention run` prints each dropped partition with its scan count and exits 0;
    the period comes from PASSCODE_SCAN_RETENTION_DAYS (45 keeps the scans 40 days old, the
    default 28 then drops them)."""
    place = await store_scans(pool, (40, 1))
    longer = await cli(settings, "retention", "run", PASSCODE_SCAN_RETENTION_DAYS="45")
    assert longer.returncode == 0, longer.stderr
    assert partition_name(day_ago(40)) not in longer.stdout
    assert await scans_by_day(pool, place) == {day_ago(40): 3, day_ago(1): 3}

    rows = await partition_rows(pool, day_ago(40))
    result = await cli(settings, "retention", "run")
    assert result.returncode == 0, result.stderr
    assert f"dropped {partition_name(day_ago(40))}: {rows} scans" in result.stdout
    assert "scan retention (cutoff" in result.stdout
    assert await scans_by_day(pool, place) == {day_ago(1): 3}


async def test_the_retention_period_is_at_least_one_day(settings: Settings) -> None:
    """PASSCODE_SCAN_RETENTION_DAYS is read from the environment (default 28); a period under a
    day (or a non-positive interval) is refused by the service and by the CLI (exit 2)."""
    assert Settings().scan_retention_days == 28
    assert Settings().retention_interval == 3600
    parsed = Settings.from_env(
        {"PASSCODE_SCAN_RETENTION_DAYS": "7", "PASSCODE_RETENTION_INTERVAL": "60"}
    )
    assert (parsed.scan_retention_days, parsed.retention_interval) == (7, 60.0)
    for bad in ({"scan_retention_days": 0}, {"retention_interval": 0.0}):
        with pytest.raises(SettingsError):
            create_app(dataclasses.replace(settings, **bad))
    with pytest.raises(ValueError, match="at least 1 day"):
        retention_cutoff(datetime.now(UTC), 0)
    result = await cli(settings, "retention", "run", PASSCODE_SCAN_RETENTION_DAYS="0")
    assert result.returncode == 2
    assert "at least 1" in result.stderr
