"""Risk places (时空伴随), on real PostgreSQL and Redis: an authority marks a place for a window;
everyone who scanned there in it gets the new status in Postgres and Redis, in a resumable,
idempotent background job; only health officers may do it, and it is audited."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.app import create_app, open_cache
from passcode.config import Settings
from passcode.domain.model import Color, Role
from passcode.keys import CACHE, DRAIN, POOL, SEALER, SETTINGS
from passcode.service.riskplaces import Progress, run_marking
from passcode.store import riskplaces
from passcode.store.admins import add_credential
from passcode.store.cache import LiveStatus
from passcode.store.scans import ScanRow, insert_scans
from passcode.store.statuses import (
    find_subject,
    read_status,
    refresh_statuses,
    sync_unsynced,
)
from tests.api.proxy import TcpProxy
from tests.api.test_verify import (
    assert_problem,
    declare,
    fetch_pass,
    new_terminal,
    post_verify,
    verify_ok,
)
from tests.conftest import ADMIN, HEALTHY, TokenFactory, auth

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]
URL = "/v1/admin/risk-places"


@dataclass(frozen=True)
class Citizen:
    user_id: str
    token: str
    subject: bytes
    code: str  # a pass fetched while green


async def new_citizen(client: Client, make_token: TokenFactory) -> Citizen:
    """A citizen with a healthy declaration (green) and a pass."""
    user_id = f"rp-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id)
    await declare(client, token, HEALTHY)
    code = await fetch_pass(client, token)
    settings = client.app[SETTINGS]
    user_hash = client.app[SEALER].user_hash(settings.idp_issuer, user_id)
    subject = await find_subject(client.app[POOL], user_hash, timeout=5)
    assert subject is not None
    return Citizen(user_id, token, subject, code)


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


async def mark(client: Client, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = await client.post(URL, json=body, headers=ADMIN)
    found: dict[str, Any] = await response.json()
    assert response.status == status, found
    if status == 202:
        assert response.headers["Location"] == f"{URL}/{found['id']}"
    return found


async def finished(client: Client, marking_id: str) -> dict[str, Any]:
    """The marking once its job is done (or failed), polled through the API."""
    async with asyncio.timeout(30):
        while True:
            response = await client.get(f"{URL}/{marking_id}", headers=ADMIN)
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            if body["state"] in {"done", "failed"}:
                return body
            await asyncio.sleep(0.05)


async def both(client: Client, subject: bytes) -> tuple[LiveStatus | None, LiveStatus | None]:
    """The subject's status in Postgres and in Redis."""
    pg = await read_status(client.app[POOL], subject, timeout=5)
    redis = await client.app[CACHE].get_status(subject)
    return pg, redis


async def colors_agree(client: Client, subject: bytes) -> Color | None:
    pg, redis = await both(client, subject)
    assert pg is not None
    assert pg == redis, (pg, redis)
    return pg.color


async def scans_at(client: Client, place: str) -> int:
    async with client.app[POOL].acquire() as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM scans WHERE place = $1", place)
    return found


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
    """The same place, window and colour again: 200 with the same marking and no new job; and
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
    changes = await refresh_statuses(
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
    response = await client.get(f"{URL}/{marking_id}", headers=ADMIN)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_redis_down_during_the_job_leaves_the_sync_worker_to_repair(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    proxies: Callable[[str], Awaitable[TcpProxy]],
) -> None:
    """With Redis unreachable the job still finishes: statuses are yellow in Postgres with
    cached_version behind version, Redis keeps the old green; once Redis is back the sync
    worker's repair brings it in line."""
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
        await direct.client.aclose()
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
    response = await client.post(URL, json=body, headers=auth(key))
    assert_problem(response, await response.json(), 403)
    response = await client.get(f"{URL}/{uuid.uuid4()}", headers=auth(key))
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
        ({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "until before"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "empty window"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2024-01-29T00:00:01Z"}, "over 28 days"),
        ({"until": _future(hours=1)}, "until in the future"),
        ({"exposure_until": "2020-01-01T00:00:00Z"}, "exposure already over"),
        ({"exposure_until": 5}, "exposure_until not a string"),
        ({"extra": 1}, "unknown field"),
    ],
)
async def test_bad_bodies_get_400_problems(
    client: Client, change: dict[str, Any], why: str
) -> None:
    """Each malformed or out-of-range body is a 400 problem, and nothing is marked."""
    body = _valid()
    for name, value in change.items():
        if value is None:
            del body[name]
        else:
            body[name] = value
    response = await client.post(URL, json=body, headers=ADMIN)
    assert_problem(response, await response.json(), 400)
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM risk_places WHERE note = 'n'") == 0, why


async def test_not_json_and_unknown_ids(client: Client) -> None:
    """A body that is not JSON is a 400; an unknown or malformed marking id is a 404."""
    response = await client.post(
        URL, data=b"{", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert_problem(response, await response.json(), 400)
    for marking_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"{URL}/{marking_id}", headers=ADMIN)
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
