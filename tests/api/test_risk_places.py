"""Risk places (时空伴随), on real PostgreSQL and Redis: an authority marks a place for a window;
everyone who scanned there in it gets the new status in Postgres and Redis, in a resumable,
idempotent background job; only health officers may do it, and it is audited."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Color, Role
from passcode.keys import CACHE, DRAIN, POOL, SETTINGS
from passcode.service.riskplaces import Progress, run_marking
from passcode.service.status import refresh_many, sync_unsynced
from passcode.store import riskplaces
from passcode.store.admins import add_credential
from passcode.store.scans import ScanRow, insert_scans
from passcode.testing import auth
from passcode.wiring import open_cache
from tests.api.proxy import TcpProxy
from tests.helpers import (
    ADMIN,
    RISK_PLACES,
    TokenFactory,
    assert_problem,
    both,
    colors_agree,
    fetch_pass,
    finished,
    mark,
    needs_tcp,
    new_citizen,
    new_terminal,
    post_verify,
    scans_at,
    verify_ok,
)

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


async def add_scan(client: Client, subject: bytes, place: str, at: datetime) -> None:
    """A scan stored straight in Postgres, at a chosen time (the drain's path stores 'now')."""
    row = ScanRow(
        scanned_at=at,
        scan_id=uuid.uuid4(),
        terminal_time=None,
        terminal_id=uuid.uuid4(),
        place=place,
        subject_id=subject,
        decision="admit",
        reason="ok",
        color="green",
    )
    assert await insert_scans(client.app[POOL], [row], timeout=5, dedupe_window=60) == 1


def a_place() -> str:
    return f"Risky Mall {uuid.uuid4().hex[:8]}"


def window(hours_ago: float = 2, hours: float = 1.5) -> dict[str, str]:
    start = datetime.now(UTC) - timedelta(hours=hours_ago)
    return {"since": start.isoformat(), "until": (start + timedelta(hours=hours)).isoformat()}


async def test_who_scanned_there_in_the_window_turns_yellow_and_no_one_else(
    client: Client, make_token: TokenFactory
) -> None:
    """A marking (colour omitted: yellow) reaches a citizen scanned at the place by a real
    terminal and one with a stored scan in the window: both are denied status_yellow with the
    pass they hold, and Postgres and Redis agree. Citizens who scanned there before the window,
    or elsewhere in it, stay green and are admitted. The job's progress reaches 2 of 2."""
    place = a_place()
    _, key = await new_terminal(client, place)
    _, elsewhere_key = await new_terminal(client, "Somewhere Else")
    live, stored, before, elsewhere = [await new_citizen(client, make_token) for _ in range(4)]
    assert (await verify_ok(client, key, live.code))["decision"] == "admit"
    await client.app[DRAIN].drain_all()  # the scan into Postgres, as the drain does anyway
    assert await scans_at(client, place) == 1
    now = datetime.now(UTC)
    since = now - timedelta(hours=2)
    await add_scan(client, stored.subject, place, since)  # the window's first instant counts
    await add_scan(client, before.subject, place, since - timedelta(microseconds=1))
    await add_scan(client, elsewhere.subject, "Somewhere Else", now - timedelta(hours=1))

    body = {"place": f"  {place} ", "since": since.isoformat(), "until": now.isoformat()}
    marked = await mark(client, {**body, "note": "confirmed case visited"})
    assert (marked["place"], marked["color"], marked["exposure_until"]) == (place, "yellow", None)
    assert marked["state"] in {"pending", "running", "done"}
    done = await finished(client, marked["id"])
    assert (done["state"], done["affected"], done["processed"], done["error"]) == (
        "done",
        2,
        2,
        None,
    )
    assert done["started_at"] is not None
    assert done["finished_at"] is not None

    for exposed in (live, stored):
        assert await colors_agree(client, exposed.subject) is Color.YELLOW
        verdict = await verify_ok(client, elsewhere_key, exposed.code)
        assert (verdict["decision"], verdict["reason"]) == ("deny", "status_yellow")
    for spared in (before, elsewhere):
        assert await colors_agree(client, spared.subject) is Color.GREEN
        assert (await verify_ok(client, elsewhere_key, spared.code))["decision"] == "admit"

    async with client.app[POOL].acquire() as conn:
        audited = await conn.fetch(
            "SELECT action, outcome, rows, target FROM audit_log"
            " WHERE action LIKE 'risk_place.%' AND target->>'marking_id' = $1 ORDER BY id",
            marked["id"],
        )
    assert [(r["action"], r["outcome"], r["rows"]) for r in audited][:2] == [
        ("risk_place.mark", "ok", 1),
        ("risk_place.read", "ok", 1),
    ]


async def test_a_red_marking_turns_them_red_until_the_exposure_ends(
    client: Client, make_token: TokenFactory
) -> None:
    """color red gives red (verify: status_red); with exposure_until the status holds until
    then at most, in Postgres and Redis alike."""
    place = a_place()
    person = await new_citizen(client, make_token)
    await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    ends = (datetime.now(UTC) + timedelta(hours=6)).replace(microsecond=0)
    marked = await mark(
        client,
        {
            "place": place,
            **window(),
            "color": "red",
            "note": "outbreak",
            "exposure_until": ends.isoformat(),
        },
    )
    assert (await finished(client, marked["id"]))["state"] == "done"
    assert await colors_agree(client, person.subject) is Color.RED
    pg, _ = await both(client, person.subject)
    assert pg is not None
    assert pg.valid_until == int(ends.timestamp())
    _, key = await new_terminal(client)
    verdict = await verify_ok(client, key, person.code)
    assert (verdict["decision"], verdict["reason"]) == ("deny", "status_red")


async def test_marking_again_changes_nothing(client: Client, make_token: TokenFactory) -> None:
    """The same place, window and colour again: 200 with the same marking and no new job
    (audited too, as not created); and
    running its job once more from scratch inserts no exposure, changes no status row or
    version, and writes nothing to Redis. A finished marking is not run again; a bulk refresh
    of the same subjects changes nothing either."""
    place = a_place()
    people = [await new_citizen(client, make_token) for _ in range(3)]
    for person in people:
        await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    body = {"place": place, **window(), "note": "first"}
    marked = await mark(client, body)
    await finished(client, marked["id"])
    versions = [await both(client, p.subject) for p in people]
    assert all(pg is not None and pg.color is Color.YELLOW for pg, _ in versions)

    again = await mark(client, {**body, "note": "second"}, status=200)
    assert again["id"] == marked["id"]
    assert (again["note"], again["state"], again["processed"]) == ("first", "done", 3)
    assert [(o, r, t["created"]) for o, r, t in await mark_audits(client, marked["id"])] == [
        ("ok", 1, True),
        ("ok", 0, False),
    ]
    assert [await both(client, p.subject) for p in people] == versions
    red = await mark(client, {**body, "color": "red"})  # another colour is another marking
    assert red["id"] != marked["id"]
    await finished(client, red["id"])
    versions = [await both(client, p.subject) for p in people]

    settings = client.app[SETTINGS]
    pool, cache = client.app[POOL], client.app[CACHE]
    marking_id = uuid.UUID(marked["id"])

    async def run() -> Any:
        return await run_marking(
            pool, cache, marking_id, policy=settings.policy(), chunk=2, timeout=10
        )

    assert (await run()).state == "skipped"  # done: nothing to do
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE risk_places SET state = 'pending', cursor_subject = NULL, processed = 0"
            " WHERE id = $1",
            marking_id,
        )
    rerun = await run()
    assert (rerun.state, rerun.affected, rerun.processed) == ("done", 3, 3)
    assert (rerun.exposures, rerun.rows_written, rerun.versions_bumped, rerun.redis_writes) == (
        0,
        0,
        0,
        0,
    )
    changes = await refresh_many(
        pool,
        cache,
        [p.subject for p in people] + [b"\x00" * 16],
        now=datetime.now(UTC),
        policy=settings.policy(),
        timeout=5,
    )
    assert (changes.written, changes.bumped) == ([], 0)
    assert [await both(client, p.subject) for p in people] == versions
    async with pool.acquire() as conn:
        exposures = await conn.fetchval(
            "SELECT count(*) FROM exposures WHERE source = $1", f"risk_place:{marking_id}"
        )
    assert exposures == 3


async def test_an_interrupted_job_resumes_where_it_stopped(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A job cancelled after its first chunk (2 of 5 subjects) stays running with its resume
    point and progress committed: those 2 are yellow, the others still green. The next service
    start resumes it to done with 5 of 5, each subject exposed once."""
    small = dataclasses.replace(settings, risk_chunk=2)
    client = await aiohttp_client(create_app(small))
    place = a_place()
    people = [await new_citizen(client, make_token) for _ in range(5)]
    for person in people:
        await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    start = datetime.now(UTC) - timedelta(hours=2)
    marking, created = await riskplaces.create_marking(
        client.app[POOL],
        place=place,
        since=start,
        until=start + timedelta(hours=1, minutes=30),
        color=Color.YELLOW,
        note="resume test",
        exposure_until=None,
        created_by="test",
        timeout=5,
    )
    assert created
    first_chunk = asyncio.Event()
    seen: list[Progress] = []

    async def stall(progress: Progress) -> None:
        seen.append(progress)
        first_chunk.set()
        await asyncio.Event().wait()  # the process "stops" here

    job = asyncio.create_task(
        run_marking(
            client.app[POOL],
            client.app[CACHE],
            marking.id,
            policy=small.policy(),
            chunk=small.risk_chunk,
            timeout=10,
            on_progress=stall,
        )
    )
    async with asyncio.timeout(20):
        await first_chunk.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    assert [(p.processed, p.affected) for p in seen] == [(2, 5)]
    halfway = await marking_body(client, str(marking.id))
    assert (halfway["state"], halfway["affected"], halfway["processed"]) == ("running", 5, 2)
    ordered = sorted(people, key=lambda p: p.subject)
    stored = await riskplaces.get_marking(client.app[POOL], marking.id, timeout=5)
    assert stored is not None
    assert stored.cursor_subject == ordered[1].subject
    assert [await colors_agree(client, p.subject) for p in ordered] == [Color.YELLOW] * 2 + [
        Color.GREEN
    ] * 3
    await client.close()

    restarted = await aiohttp_client(create_app(small))  # its start-up resumes the marking
    done = await finished(restarted, str(marking.id))
    assert (done["state"], done["affected"], done["processed"]) == ("done", 5, 5)
    assert [await colors_agree(restarted, p.subject) for p in ordered] == [Color.YELLOW] * 5
    async with restarted.app[POOL].acquire() as conn:
        per_subject = await conn.fetch(
            "SELECT count(*) AS n FROM exposures WHERE source = $1 GROUP BY subject_id",
            marking.source,
        )
    assert sorted(r["n"] for r in per_subject) == [1] * 5


async def marking_body(client: Client, marking_id: str) -> dict[str, Any]:
    response = await client.get(f"{RISK_PLACES}/{marking_id}", headers=ADMIN)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_redis_down_during_the_job_leaves_the_sync_worker_to_repair(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """With Redis unreachable the job still finishes (its wait for the scan stream gives up at
    its bound): statuses are yellow in Postgres with
    cached_version behind version, Redis keeps the old green; once Redis is back the sync
    worker's repair brings it in line."""
    needs_tcp(settings.redis_url)
    assert settings.redis_url is not None
    redis_proxy = await proxies(settings.redis_url)
    proxied = dataclasses.replace(
        settings, redis_url=redis_proxy.url(settings.redis_url), drain_enabled=False
    )
    client = await aiohttp_client(create_app(proxied))
    place = a_place()
    person = await new_citizen(client, make_token)
    await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    start = datetime.now(UTC) - timedelta(hours=2)
    marking, _ = await riskplaces.create_marking(
        client.app[POOL],
        place=place,
        since=start,
        until=start + timedelta(hours=2),
        color=Color.YELLOW,
        note="redis down",
        exposure_until=None,
        created_by="test",
        timeout=5,
    )
    await redis_proxy.cut()
    report = await run_marking(
        client.app[POOL],
        client.app[CACHE],
        marking.id,
        policy=proxied.policy(),
        chunk=10,
        timeout=10,
        catch_up=0.5,  # the scan stream cannot be looked at: a warning, and on with Postgres
    )
    assert (report.state, report.rows_written, report.redis_writes) == ("done", 1, 0)
    async with client.app[POOL].acquire() as conn:
        row = await conn.fetchrow(
            "SELECT color, version, cached_version FROM statuses WHERE subject_id = $1",
            person.subject,
        )
    assert row["color"] == "yellow"
    assert row["cached_version"] < row["version"]
    direct = open_cache(settings)  # Redis itself, not through the cut proxy
    try:
        before = await direct.get_status(person.subject)
        assert before is not None
        assert before.color is Color.GREEN

        await redis_proxy.restore()
        assert await sync_unsynced(client.app[POOL], client.app[CACHE], limit=100, timeout=5) >= 1
        after = await direct.get_status(person.subject)
        assert after is not None
        assert (after.color, after.version) == (Color.YELLOW, row["version"])
    finally:
        await direct.close()
        await client.close()


async def test_without_the_health_officer_role_it_is_refused_and_audited(
    client: Client,
) -> None:
    """An operator's credential gets 403 on both operations, and each refusal is in the
    audit log (outcome denied)."""
    made, key = await add_credential(
        client.app[POOL], "gate operator", frozenset({Role.OPERATOR}), timeout=5
    )
    body = {"place": a_place(), **window(), "note": "x"}
    response = await client.post(RISK_PLACES, json=body, headers=auth(key))
    assert_problem(response, await response.json(), 403)
    response = await client.get(f"{RISK_PLACES}/{uuid.uuid4()}", headers=auth(key))
    assert_problem(response, await response.json(), 403)
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT action, outcome FROM audit_log WHERE actor = $1 ORDER BY id",
            f"gate operator ({made.id})",
        )
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("risk_place.mark", "denied"),
        ("risk_place.read", "denied"),
    ]
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM risk_places WHERE note = 'x'") == 0


def _valid() -> dict[str, Any]:
    return {"place": "Anywhere", **window(), "note": "n"}


def _future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def _past(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"place": None}, "place missing"),
        ({"place": ""}, "place empty"),
        ({"place": "   "}, "place blank"),
        ({"place": "x" * 201}, "place too long"),
        ({"note": None}, "note missing"),
        ({"note": ""}, "note empty"),
        ({"note": "n" * 501}, "note too long"),
        ({"color": "green"}, "green is no risk colour"),
        ({"since": "yesterday"}, "since not RFC 3339"),
        ({"until": "2026-13-45T00:00:00Z"}, "until not a date"),
        ({"since": "2026-01-01T00:00:00"}, "since without an offset"),
        ({"since": _past(hours=1), "until": _past(hours=2)}, "until before"),
        ({"since": (hour_ago := _past(hours=1)), "until": hour_ago}, "empty window"),
        ({"since": _past(days=28, seconds=2), "until": _past(seconds=1)}, "over 28 days"),
        ({"until": _future(hours=1)}, "until in the future"),
        ({"since": _past(days=40), "until": _past(days=39)}, "before the scans kept"),
        ({"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"}, "year 1"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since before year 1 in UTC"),
        ({"until": "9999-12-31T23:59:59-01:00"}, "until past year 9999 in UTC"),
        ({"until": "9999-12-31T23:59:59Z"}, "until in year 9999"),
        ({"exposure_until": "2020-01-01T00:00:00Z"}, "exposure already over"),
        ({"exposure_until": 5}, "exposure_until not a string"),
        ({"exposure_until": "9999-12-31T23:59:59-01:00"}, "exposure past year 9999 in UTC"),
        ({"exposure_until": "9999-12-31T23:59:59Z"}, "exposure in year 9999"),
        ({"exposure_until": _future(days=367)}, "exposure over 366 days ahead"),
        ({"extra": 1}, "unknown field"),
    ],
)
async def test_bad_bodies_get_400_problems(
    client: Client, change: dict[str, Any], why: str
) -> None:
    """Each malformed or out-of-range body (far years and times UTC cannot hold included) is a
    400 problem, and nothing is marked."""
    body = _valid()
    for name, value in change.items():
        if value is None:
            del body[name]
        else:
            body[name] = value
    response = await client.post(RISK_PLACES, json=body, headers=ADMIN)
    assert_problem(response, await response.json(), 400)
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM risk_places WHERE note = 'n'") == 0, why


async def test_not_json_and_unknown_ids(client: Client) -> None:
    """A body that is not JSON is a 400; an unknown or malformed marking id is a 404."""
    response = await client.post(
        RISK_PLACES, data=b"{", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert_problem(response, await response.json(), 400)
    for marking_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"{RISK_PLACES}/{marking_id}", headers=ADMIN)
        assert_problem(response, await response.json(), 404)


async def test_a_later_override_releases_the_exposure(
    client: Client, make_token: TokenFactory
) -> None:
    """An open-ended exposure lasts until an authority's override: green by ruling after the
    marking turns the citizen green (a new pass is admitted), and running the marking's job
    again does not turn them back."""
    place = a_place()
    person = await new_citizen(client, make_token)
    await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    marked = await mark(client, {"place": place, **window(), "note": "case"})
    await finished(client, marked["id"])
    assert await colors_agree(client, person.subject) is Color.YELLOW

    response = await client.post(
        "/v1/admin/overrides",
        json={"user_id": person.user_id, "color": "green", "reason": "quarantine_release"},
        headers=ADMIN,
    )
    assert response.status == 201, await response.text()
    assert await colors_agree(client, person.subject) is Color.GREEN
    _, key = await new_terminal(client)
    fresh = await fetch_pass(client, person.token)
    assert (await verify_ok(client, key, fresh))["decision"] == "admit"

    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE risk_places SET state = 'pending', cursor_subject = NULL WHERE id = $1",
            uuid.UUID(marked["id"]),
        )
    settings = client.app[SETTINGS]
    report = await run_marking(
        client.app[POOL],
        client.app[CACHE],
        uuid.UUID(marked["id"]),
        policy=settings.policy(),
        chunk=10,
        timeout=10,
    )
    assert (report.state, report.exposures, report.rows_written) == ("done", 0, 0)
    assert await colors_agree(client, person.subject) is Color.GREEN
    response, body = await post_verify(client, key, code=fresh)
    assert (response.status, body["decision"]) == (200, "admit")


async def mark_audits(client: Client, marking_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(outcome, rows, target) of the marking's risk_place.mark audit entries, oldest first."""
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT outcome, rows, target FROM audit_log WHERE action = 'risk_place.mark'"
            " AND target->>'marking_id' = $1 ORDER BY id",
            marking_id,
        )
    return [(r["outcome"], r["rows"], json.loads(r["target"])) for r in rows]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("place", "Risky\u0000Mall"),
        ("note", "case\u0000"),
        ("note", "line\nbreak"),
        ("place", "\u001fMall"),
    ],
)
async def test_control_characters_are_refused_naming_the_field(
    client: Client, field: str, value: str
) -> None:
    """A NUL (which Postgres refuses) or any other C0 control character in place or note is a
    400 problem naming the field, never a 500; nothing is marked."""
    body = {**_valid(), "note": "ctl", field: value}
    response = await client.post(RISK_PLACES, json=body, headers=ADMIN)
    problem = await response.json()
    assert_problem(response, problem, 400)
    assert problem["errors"] == [field]
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM risk_places WHERE note = 'ctl'") == 0


async def test_a_scan_still_in_the_redis_stream_is_exposed(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A scan at a real terminal that the drain has not yet moved to Postgres (the service's
    drain waits an hour between passes) is found by a marking made right after: the job drains
    the stream up to the window's end before it lists who scanned, and the citizen turns
    yellow."""
    slow = dataclasses.replace(settings, drain_interval=3600)
    client = await aiohttp_client(create_app(slow))
    place = a_place()
    _, key = await new_terminal(client, place)
    person = await new_citizen(client, make_token)
    since = datetime.now(UTC) - timedelta(hours=1)
    assert (await verify_ok(client, key, person.code))["decision"] == "admit"
    assert await scans_at(client, place) == 0  # in the Redis stream only
    until = datetime.now(UTC)
    marked = await mark(
        client,
        {"place": place, "since": since.isoformat(), "until": until.isoformat(), "note": "lag"},
    )
    done = await finished(client, marked["id"])
    assert (done["state"], done["affected"], done["processed"]) == ("done", 1, 1)
    assert await scans_at(client, place) == 1
    assert await colors_agree(client, person.subject) is Color.YELLOW


async def test_a_subject_below_the_cursor_is_still_exposed_on_resume(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """A job interrupted after its first chunk; then a scan of a subject whose id sorts below
    the chunk's last subject (the cursor) reaches Postgres. Resumed, the job gives that subject
    the exposure too (it selects subjects without this marking's exposure, not those after the
    cursor): 5 of 5, each exposed once."""
    small = dataclasses.replace(settings, risk_chunk=2)
    client = await aiohttp_client(create_app(small))
    place = a_place()
    people = [await new_citizen(client, make_token) for _ in range(4)]
    at = datetime.now(UTC) - timedelta(hours=1)
    for person in people:
        await add_scan(client, person.subject, place, at)
    start = datetime.now(UTC) - timedelta(hours=2)
    marking, _ = await riskplaces.create_marking(
        client.app[POOL],
        place=place,
        since=start,
        until=start + timedelta(hours=1, minutes=30),
        color=Color.YELLOW,
        note="below the cursor",
        exposure_until=None,
        created_by="test",
        timeout=5,
    )
    first_chunk = asyncio.Event()

    async def stall(progress: Progress) -> None:
        first_chunk.set()
        await asyncio.Event().wait()

    pool, cache = client.app[POOL], client.app[CACHE]

    def job(on_progress: Callable[[Progress], Awaitable[None]] | None = None) -> Any:
        return run_marking(
            pool,
            cache,
            marking.id,
            policy=small.policy(),
            chunk=small.risk_chunk,
            timeout=10,
            on_progress=on_progress,
        )

    running = asyncio.create_task(job(stall))
    async with asyncio.timeout(20):
        await first_chunk.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    stored = await riskplaces.get_marking(pool, marking.id, timeout=5)
    assert stored is not None
    assert stored.cursor_subject is not None
    assert stored.processed == 2

    late = await new_citizen(client, make_token, subject_id=b"\x00\x00" + os.urandom(14))
    assert late.subject < stored.cursor_subject
    await add_scan(client, late.subject, place, at)
    report = await job()
    assert (report.state, report.affected, report.processed) == ("done", 5, 5)
    assert report.exposures == 3  # the late subject and the two after the cursor
    for person in [*people, late]:
        assert await colors_agree(client, person.subject) is Color.YELLOW
    async with pool.acquire() as conn:
        per_subject = await conn.fetch(
            "SELECT count(*) AS n FROM exposures WHERE source = $1 GROUP BY subject_id",
            marking.source,
        )
    assert sorted(r["n"] for r in per_subject) == [1] * 5


@contextlib.asynccontextmanager
async def exposures_refused(
    client: Client, note: str, *, errcode: str, once: bool
) -> AsyncIterator[None]:
    """Inserting an exposure of a marking with ``note`` raises ``errcode`` (once, or always),
    through a trigger the test adds and drops."""
    name = f"rp_refuse_{uuid.uuid4().hex[:12]}"
    first = f"nextval('{name}') = 1" if once else "true"
    async with client.app[POOL].acquire() as conn:
        await conn.execute(f"CREATE SEQUENCE {name}")
        await conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"  # noqa: S608  # the test's own names and values
            "  IF EXISTS (SELECT 1 FROM risk_places WHERE 'risk_place:' || id = NEW.source"
            f"   AND note = '{note}') THEN"
            f"    IF {first} THEN"
            f"      RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{errcode}';"
            "    END IF;"
            "  END IF;"
            "  RETURN NEW;"
            " END $$"
        )
        await conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON exposures"
            f" FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        async with client.app[POOL].acquire() as conn:
            await conn.execute(f"DROP TRIGGER {name} ON exposures")
            await conn.execute(f"DROP FUNCTION {name}()")
            await conn.execute(f"DROP SEQUENCE {name}")


async def test_a_failed_job_is_audited_and_marking_again_reruns_it(
    client: Client, make_token: TokenFactory
) -> None:
    """The mark audit entry commits with the marking, before the job: it is there when the job
    fails (a data error: failed, with the error). Marking the same again restarts the failed
    marking: 200 with it pending, audited (not created, restarted), and the job then exposes
    the citizen."""
    place = a_place()
    person = await new_citizen(client, make_token)
    await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    note = f"fail-{uuid.uuid4().hex[:8]}"
    body = {"place": place, **window(), "note": note}
    async with exposures_refused(client, note, errcode="P0001", once=False):
        marked = await mark(client, body)
        failed = await finished(client, marked["id"])
    assert failed["state"] == "failed"
    assert "refused by the test" in failed["error"]
    audits = await mark_audits(client, marked["id"])
    assert [(o, r, t["created"]) for o, r, t in audits] == [("ok", 1, True)]
    assert await colors_agree(client, person.subject) is Color.GREEN

    again = await mark(client, body, status=200)
    assert (again["id"], again["state"], again["error"]) == (marked["id"], "pending", None)
    done = await finished(client, marked["id"])
    assert (done["state"], done["affected"], done["processed"], done["error"]) == (
        "done",
        1,
        1,
        None,
    )
    assert await colors_agree(client, person.subject) is Color.YELLOW
    audits = await mark_audits(client, marked["id"])
    assert [(o, r, t["created"], t.get("restarted")) for o, r, t in audits] == [
        ("ok", 1, True, None),
        ("ok", 1, False, True),
    ]


@pytest.mark.parametrize("errcode", ["40P01", "40001", "55P03"])
async def test_a_transient_error_is_retried_not_failed(
    client: Client, make_token: TokenFactory, errcode: str
) -> None:
    """A deadlock (40P01), serialization failure (40001) or lock not available (55P03) in a
    chunk leaves the marking running; the runner retries it after a backoff and it ends done,
    never failed."""
    place = a_place()
    person = await new_citizen(client, make_token)
    await add_scan(client, person.subject, place, datetime.now(UTC) - timedelta(hours=1))
    note = f"transient-{uuid.uuid4().hex[:8]}"
    async with exposures_refused(client, note, errcode=errcode, once=True):
        marked = await mark(client, {"place": place, **window(), "note": note})
        done = await finished(client, marked["id"])
    assert (done["state"], done["processed"], done["error"]) == ("done", 1, None)
    assert await colors_agree(client, person.subject) is Color.YELLOW


async def test_without_its_own_drain_the_job_waits_for_the_drain_process(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PASSCODE_DRAIN_ENABLED=0 (a separate `passcode drain` process stores the scans): the
    job waits, bounded, until the stream holds no scan from before the window's end. Past the
    bound it logs a warning and goes on with Postgres's scans (no one found); once the other
    drain has stored the scan, the same wait ends and the citizen is exposed."""
    alone = dataclasses.replace(settings, drain_enabled=False)
    client = await aiohttp_client(create_app(alone))
    place = a_place()
    _, key = await new_terminal(client, place)
    person = await new_citizen(client, make_token)
    since = datetime.now(UTC) - timedelta(hours=1)
    assert (await verify_ok(client, key, person.code))["decision"] == "admit"
    pool, cache = client.app[POOL], client.app[CACHE]

    async def marking_now(note: str) -> riskplaces.Marking:
        made, _ = await riskplaces.create_marking(
            pool,
            place=place,
            since=since,
            until=datetime.now(UTC),
            color=Color.YELLOW,
            note=note,
            exposure_until=None,
            created_by="test",
            timeout=5,
        )
        return made

    def job(marking: riskplaces.Marking, catch_up: float) -> Any:
        return run_marking(
            pool, cache, marking.id, policy=alone.policy(), chunk=10, timeout=10, catch_up=catch_up
        )

    unlucky = await marking_now("no drain")
    with caplog.at_level("WARNING", logger="passcode.service.riskplaces"):
        report = await job(unlucky, 0.3)
    assert (report.state, report.affected) == ("done", 0)
    assert "still holds scans" in caplog.text

    waiting = asyncio.create_task(job(await marking_now("drain elsewhere"), 20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    other = client.app[DRAIN]  # as the `passcode drain` process would
    await other.ensure_groups()
    assert await other.drain_all() == 1
    report = await waiting
    assert (report.state, report.affected, report.exposures) == ("done", 1, 1)
    assert await colors_agree(client, person.subject) is Color.YELLOW
