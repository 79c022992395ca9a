"""Retention of every kind (issue 16) on the real PostgreSQL and Redis: each kind goes at its
time and recent ones stay; and, over generated histories, a purge at any time changes no
subject's status, now or later, as the project's own derivation reads it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from passcode.config import Settings
from passcode.domain.model import Color, StatusReason
from passcode.domain.retention import RetentionPeriods, cutoffs
from passcode.domain.rules import Derived, Policy, derive_status
from passcode.domain.status import LiveStatus
from passcode.store import pg, statuses
from passcode.store.cache import Cache
from passcode.store.retention import PurgeReport, purge, retention_cutoff
from passcode.wiring import open_cache

BASE = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
POLICY = Policy()
SHORT = RetentionPeriods(
    declaration_days=2,
    ruling_days=2,
    test_result_days=2,
    card_days=2,
    idempotency_hours=2,
    dead_letter_days=2,
    audit_days=3 * 365 + 1,
    subject_grace_hours=1,
)


@dataclass(slots=True)
class Stores:
    loop: asyncio.AbstractEventLoop
    pool: pg.Pool
    cache: Cache

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def stores(settings: Settings) -> Iterator[Stores]:
    """A pool and a cache on a loop of the test's own (hypothesis runs examples synchronously)."""
    loop = asyncio.new_event_loop()
    assert settings.database_url is not None

    async def make() -> tuple[pg.Pool, Cache]:
        pool = await pg.create_pool(settings.database_url or "", timeout=5, min_size=1, max_size=4)
        await pg.migrate(pool)
        return pool, open_cache(settings)

    pool, cache = loop.run_until_complete(make())
    try:
        yield Stores(loop, pool, cache)
    finally:
        loop.run_until_complete(cache.close())
        loop.run_until_complete(pool.close())
        loop.close()


async def new_subject(pool: pg.Pool, created_at: datetime) -> bytes:
    subject = os.urandom(16)
    await pool.execute(
        "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked, created_at)"
        " VALUES ($1, $2, $3, '张*三', $4)",
        subject,
        os.urandom(32),
        os.urandom(40),
        created_at,
    )
    return subject


async def declare(
    pool: pg.Pool, subject: bytes, at: datetime, *, temperature: float = 36.6, close: bool = False
) -> None:
    await pool.execute(
        "INSERT INTO declarations (subject_id, idempotency_key, request_hash, temperature_c,"
        " symptoms, regions, close_contact, declared_at) VALUES ($1, $2, $3, $4, '{}', '{}', $5, $6)",
        subject,
        os.urandom(8).hex(),
        os.urandom(32),
        temperature,
        close,
        at,
    )


async def rule(
    pool: pg.Pool,
    table: str,
    subject: bytes,
    *,
    color: Color,
    reason: StatusReason,
    valid_from: datetime,
    valid_until: datetime | None,
    created_at: datetime,
    source: str | None = None,
) -> None:
    if table == "overrides":
        await pool.execute(
            "INSERT INTO overrides (subject_id, color, reason, valid_from, valid_until,"
            " created_by, created_at) VALUES ($1, $2, $3, $4, $5, 'test', $6)",
            subject,
            color.value,
            reason.value,
            valid_from,
            valid_until,
            created_at,
        )
        return
    await pool.execute(
        "INSERT INTO exposures (subject_id, color, reason, source, valid_from, valid_until,"
        " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        subject,
        color.value,
        reason.value,
        source or f"risk:{os.urandom(6).hex()}",
        valid_from,
        valid_until,
        created_at,
    )


async def run_purge(stores: Stores, now: datetime, periods: RetentionPeriods) -> PurgeReport:
    return await purge(
        stores.pool,
        cutoffs(now, periods, declaration_ttl=POLICY.declaration_ttl),
        scan_cutoff=retention_cutoff(now, periods.dead_letter_days),
        cache=stores.cache,
        timeout=10,
    )


async def derived(
    pool: pg.Pool, subjects: list[bytes], at: datetime
) -> dict[bytes, Derived | None]:
    """Each subject's status at ``at`` as the service derives it: its facts as
    :func:`passcode.store.statuses.bulk_facts` reads them, through the rules."""
    async with pool.acquire() as conn, conn.transaction():
        decls, overrides, exposures = await statuses.bulk_facts(conn, subjects, at, timeout=10)
    return {
        s: derive_status(
            decls.get(s), overrides.get(s, ()), exposures.get(s, ()), now=at, policy=POLICY
        )
        for s in subjects
    }


async def count(pool: pg.Pool, table: str, subject: bytes, column: str = "subject_id") -> int:
    found: int = await pool.fetchval(
        f"SELECT count(*) FROM {table} WHERE {column} = $1",  # noqa: S608  # constant names
        subject,
    )
    return found


# --- each kind at its time ----------------------------------------------------------------------


def test_declarations_go_once_superseded_or_lapsed_for_the_period(stores: Stores) -> None:
    """With a 2-day period: a declaration superseded 3 days ago goes, one superseded 1 day ago
    stays; the latest stays while it can decide and 2 days past its 7-day lifetime it goes too;
    idempotency keys older than 2 hours are cleared, younger ones kept."""
    now = BASE + 30 * DAY

    async def scenario() -> None:
        pool = stores.pool
        a = await new_subject(pool, BASE)
        for at in (now - 5 * DAY, now - 3 * DAY, now - DAY, now - HOUR):
            await declare(pool, a, at)
        b = await new_subject(pool, BASE)
        await declare(pool, b, now - 7 * DAY - 3 * DAY)  # lapsed 3 days ago: goes
        c = await new_subject(pool, BASE)
        await declare(pool, c, now - 7 * DAY - DAY)  # lapsed 1 day ago: stays
        report = await run_purge(stores, now, SHORT)
        assert report.removed["declarations"] >= 2
        left = await pool.fetch(
            "SELECT declared_at, idempotency_key IS NOT NULL AS keyed FROM declarations"
            " WHERE subject_id = $1 ORDER BY declared_at",
            a,
        )
        # now-5d was superseded at now-3d (goes); now-3d at now-1d (stays, 1 day < 2)
        assert [(r["declared_at"], r["keyed"]) for r in left] == [
            (now - 3 * DAY, False),
            (now - DAY, False),
            (now - HOUR, True),
        ]
        assert await count(pool, "declarations", b) == 0
        assert await count(pool, "declarations", c) == 1

    stores.run(scenario())


def test_rulings_go_some_days_after_they_end_or_are_settled_for_good(stores: Stores) -> None:
    """Overrides and exposures that ended 3 days ago go, those that ended yesterday stay; an
    open exposure and an older open override settled 3 days ago by a newer open override go,
    the newest open override stays; a positive test's open exposure settled alike stays while
    its test could be uploaded again (a year), and goes after."""
    now = BASE + 30 * DAY

    async def scenario() -> None:
        pool = stores.pool
        s = await new_subject(pool, BASE)
        await declare(pool, s, now - HOUR)
        red, yellow = Color.RED, Color.YELLOW
        for table in ("overrides", "exposures"):
            for ended in (now - 3 * DAY, now - DAY):
                await rule(
                    pool,
                    table,
                    s,
                    color=yellow,
                    reason=StatusReason.QUARANTINE,
                    valid_from=ended - DAY,
                    valid_until=ended,
                    created_at=ended - DAY,
                )
        old_open = now - 10 * DAY
        await rule(
            pool, "exposures", s, color=red, reason=StatusReason.RISK_PLACE,
            valid_from=old_open, valid_until=None, created_at=old_open,
        )  # fmt: skip
        await rule(
            pool, "exposures", s, color=red, reason=StatusReason.POSITIVE_TEST,
            valid_from=old_open, valid_until=None, created_at=old_open, source="test:recent",
        )  # fmt: skip
        await rule(
            pool, "overrides", s, color=red, reason=StatusReason.QUARANTINE,
            valid_from=old_open, valid_until=None, created_at=old_open + HOUR,
        )  # fmt: skip
        release = now - 3 * DAY
        await rule(
            pool, "overrides", s, color=Color.GREEN, reason=StatusReason.QUARANTINE_RELEASE,
            valid_from=release, valid_until=None, created_at=release,
        )  # fmt: skip
        before = await derived(pool, [s], now)
        await run_purge(stores, now, SHORT)
        assert await derived(pool, [s], now) == before
        overrides = await pool.fetch(
            "SELECT reason, valid_until FROM overrides WHERE subject_id = $1 ORDER BY reason", s
        )
        assert [(r["reason"], r["valid_until"]) for r in overrides] == [
            ("quarantine", now - DAY),
            ("quarantine_release", None),
        ]
        exposures = await pool.fetch(
            "SELECT source, valid_until FROM exposures WHERE subject_id = $1 ORDER BY created_at",
            s,
        )
        assert [(r["source"], r["valid_until"]) for r in exposures] == [
            ("test:recent", None),
            (exposures[1]["source"], now - DAY),
        ]
        # A year and more on, the test's exposure can go too (the rest has ended long since).
        later = old_open + timedelta(days=367)
        await declare(pool, s, later - HOUR)
        await run_purge(stores, later, SHORT)
        assert await count(pool, "exposures", s) == 0
        assert await count(pool, "overrides", s) == 1

    stores.run(scenario())


def test_results_cards_dead_letters_and_audit_months_go_at_their_time(stores: Stores) -> None:
    """Test results tested 3 days ago go (yesterday's stay); cards expired 3 days ago go
    (yesterday's stay); dead letters first seen 3 days ago go; the audit log loses exactly
    the whole months before three years ago, and a DELETE of it outside the purge is still
    refused."""
    now = BASE + 30 * DAY

    async def scenario() -> None:
        pool = stores.pool
        s = await new_subject(pool, BASE)
        for days in (3, 1):
            at = now - days * DAY
            await pool.execute(
                "INSERT INTO test_results (subject_id, tested_at, result, uploaded_by)"
                " VALUES ($1, $2, 'negative', 'lab')",
                s,
                at,
            )
            await pool.execute(
                "INSERT INTO cards (serial, subject_id, code, issued_by, issued_at, expires_at)"
                " VALUES ($1, $2, 'PC1:X', 'worker', $3, $4)",
                os.urandom(16),
                s,
                at - 100 * DAY,
                at,
            )
            await pool.execute(
                "INSERT INTO scan_dead_letters (stream, entry_id, fields, reason, first_seen)"
                " VALUES ('retention-test', $1, ARRAY['x'::bytea], 'test', $2)",
                os.urandom(8).hex(),
                at,
            )
        purge_month = datetime(now.year - 3, now.month, 1, tzinfo=UTC)
        stamps = [purge_month - DAY, purge_month - 40 * DAY, purge_month, purge_month + DAY]
        for at in stamps:
            await pool.execute(
                "INSERT INTO audit_log (at, actor, action, outcome) VALUES ($1, 'retention-test',"
                " 'test', 'ok')",
                at,
            )
        report = await run_purge(stores, now, SHORT)
        remaining = await pool.fetch("SELECT tested_at FROM test_results WHERE subject_id = $1", s)
        assert [r["tested_at"] for r in remaining] == [now - DAY]
        cards = await pool.fetch("SELECT expires_at FROM cards WHERE subject_id = $1", s)
        assert [r["expires_at"] for r in cards] == [now - DAY]
        letters = await pool.fetch(
            "SELECT first_seen FROM scan_dead_letters WHERE stream = 'retention-test'"
        )
        assert [r["first_seen"] for r in letters] == [now - DAY]
        audit = await pool.fetch(
            "SELECT at FROM audit_log WHERE actor = 'retention-test' ORDER BY at"
        )
        assert [r["at"] for r in audit] == [purge_month, purge_month + DAY]
        assert report.removed["audit_log"] >= 2
        assert report.removed["test_results"] >= 1
        assert report.removed["cards"] >= 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pool.execute("DELETE FROM audit_log WHERE actor = 'retention-test'")

    stores.run(scenario())


def test_subjects_left_with_nothing_go_with_their_redis_keys(stores: Stores) -> None:
    """A subject whose last declaration went is erased by the same run (its row, keyed hash and
    sealed id, its status and its status key in Redis); one created within the grace period,
    and one with a record left, stay."""
    now = BASE + 30 * DAY

    async def scenario() -> None:
        pool, cache = stores.pool, stores.cache
        gone = await new_subject(pool, BASE)
        await declare(pool, gone, now - 20 * DAY)
        young = await new_subject(pool, now - 10 * (HOUR / 60))
        kept = await new_subject(pool, BASE)
        await declare(pool, kept, now - HOUR)
        for s in (gone, kept):
            await pool.execute(
                "INSERT INTO statuses (subject_id, color, reason, valid_until, version,"
                " updated_at) VALUES ($1, 'green', 'declared_healthy', $2, 1, $2)",
                s,
                now,
            )
            await cache.put_status(s, LiveStatus(Color.GREEN, 1, int(now.timestamp()), "张*三"))
        report = await run_purge(stores, now, SHORT)
        assert report.removed["subjects"] >= 1
        assert await count(pool, "subjects", gone, "id") == 0
        assert await count(pool, "statuses", gone) == 0
        assert await cache.get_status(gone) is None
        assert await count(pool, "subjects", young, "id") == 1
        assert await count(pool, "subjects", kept, "id") == 1
        assert await cache.get_status(kept) is not None

    stores.run(scenario())


# --- the property: a purge changes no status ----------------------------------------------------

hours = st.integers(0, 20 * 24)  # an instant within 20 days after BASE, by the hour
maybe_end = st.one_of(st.none(), st.integers(1, 10 * 24))
ruling = st.tuples(
    st.sampled_from(list(Color)),
    st.sampled_from(list(StatusReason)),
    hours,  # valid_from
    maybe_end,  # hours after valid_from it ends, or open
    st.integers(-5 * 24, 5 * 24),  # created_at relative to valid_from
    st.booleans(),  # an exposure: from a positive test
)
history = st.lists(
    st.tuples(
        st.lists(st.tuples(hours, st.sampled_from([36.6, 38.5]), st.booleans()), max_size=4),
        st.lists(ruling, max_size=3),  # overrides
        st.lists(ruling, max_size=3),  # exposures
        st.lists(hours, max_size=2),  # test results
    ),
    min_size=1,
    max_size=4,
)


def test_a_purge_at_any_time_never_changes_a_status(stores: Stores) -> None:
    """For generated histories of a few subjects (declarations, overrides and exposures, open
    or ending, made before or after their start, test results, at random hours over 20 days)
    and a purge at a random hour, with short periods so that much goes: every subject's
    status derived from the real database after the purge is the one derived before, at the
    purge's time and at later times."""

    @hypothesis_settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(history=history, purge_hour=st.integers(0, 30 * 24), periods_days=st.integers(1, 3))
    def check(history: list[Any], purge_hour: int, periods_days: int) -> None:
        now = BASE + purge_hour * HOUR
        periods = RetentionPeriods(
            declaration_days=periods_days,
            ruling_days=periods_days,
            test_result_days=periods_days,
            card_days=periods_days,
            idempotency_hours=1,
            dead_letter_days=periods_days,
            subject_grace_hours=1,
        )

        async def scenario() -> None:
            pool = stores.pool
            subjects = []
            for decls, overrides, exposures, tests in history:
                s = await new_subject(pool, BASE - DAY)
                subjects.append(s)
                for hour, temperature, close in decls:
                    await declare(pool, s, BASE + hour * HOUR, temperature=temperature, close=close)
                for table, rulings in (("overrides", overrides), ("exposures", exposures)):
                    for color, reason, start, length, created, test in rulings:
                        valid_from = BASE + start * HOUR
                        await rule(
                            pool,
                            table,
                            s,
                            color=color,
                            reason=reason,
                            valid_from=valid_from,
                            valid_until=None if length is None else valid_from + length * HOUR,
                            created_at=valid_from + created * HOUR,
                            source=f"test:{os.urandom(6).hex()}" if test else None,
                        )
                for hour in tests:
                    await pool.execute(
                        "INSERT INTO test_results (subject_id, tested_at, result, uploaded_by)"
                        " VALUES ($1, $2, 'positive', 'lab') ON CONFLICT DO NOTHING",
                        s,
                        BASE + hour * HOUR,
                    )
            times = [now, now + HOUR, now + 3 * DAY, now + 10 * DAY]
            before = [await derived(pool, subjects, at) for at in times]
            await run_purge(stores, now, periods)
            after = [await derived(pool, subjects, at) for at in times]
            assert after == before

        stores.run(scenario())

    check()
