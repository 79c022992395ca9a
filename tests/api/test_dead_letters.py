"""Issue 11: dead letters through the service. Operators list and replay them (audited, by
role, over HTTP and the CLI); a failing drain task is reported by /readyz and recovers; a
risk-place marking completes with a poison entry in the scan stream."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.model import Color
from passcode.keys import CACHE, DRAIN, POOL, SUPERVISOR
from passcode.store import scans as scan_store
from passcode.workers.supervisor import Supervisor
from tests.helpers import (
    POISON,
    TokenFactory,
    assert_problem,
    cli,
    colors_agree,
    finished,
    good_entries,
    mark,
    new_citizen,
    new_terminal,
    parts,
    role_headers,
    scan_id_of,
    scans_at,
    stored_scan_ids,
    verify_ok,
)

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]
URL = "/v1/admin/dead-letters"
BY_NAME = dict(POISON)
FAR_OFFSET = "terminal time 9999 -23:59"
YEAR_9500_MS = str(int(datetime(9500, 1, 1, tzinfo=UTC).timestamp() * 1000))


async def put(client: Client, redis: aioredis.Redis, entries: list[dict[bytes, bytes]]) -> None:
    streams = client.app[CACHE].stream_keys()
    for n, fields in enumerate(entries):
        await redis.xadd(streams[n % len(streams)], fields)  # type: ignore[arg-type]


async def mine(client: Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every dead letter of this test's streams, read page by page (the database is shared)."""
    streams, found, cursor = set(client.app[CACHE].stream_keys()), [], 0
    while True:
        response = await client.get(f"{URL}?limit=1000&cursor={cursor}", headers=headers)
        page = await response.json()
        assert response.status == 200, page
        found += [e for e in page["entries"] if e["stream"] in streams]
        if page["next_cursor"] is None:
            return found
        cursor = page["next_cursor"]


async def audited(client: Client, action: str) -> list[tuple[str, int | None]]:
    rows = await client.app[POOL].fetch(
        "SELECT outcome, rows FROM audit_log WHERE action = $1 ORDER BY id", action
    )
    return [(r["outcome"], r["rows"]) for r in rows]


async def test_operators_list_dead_letters_with_reasons_page_by_page_and_audited(
    client: Client, raw_redis: aioredis.Redis
) -> None:
    """Poison entries the drain kept are listed for the operator role, oldest first, each with
    its stream, entry id, fields (a non-UTF-8 byte as an escape) and reason; limit and cursor
    page through them; each read is in the audit log; a credential without the role gets 403
    (audited as denied), none gets 401, a bad limit 400."""
    operator = await role_headers(client, "operator", name="ops")
    officer = await role_headers(client, "health_officer", name="officer")
    await put(client, raw_redis, [fields for _, fields in POISON])
    await client.app[DRAIN].drain_all()
    letters = await mine(client, operator)
    assert len(letters) == len(POISON)
    assert all(letter["reason"] for letter in letters)
    assert [letter["id"] for letter in letters] == sorted(letter["id"] for letter in letters)
    escaped = [e for e in letters if any("\\xff" in f for f in e["fields"])]
    assert escaped  # the non-UTF-8 record, and the snapshot colour
    first = await client.get(f"{URL}?limit=1", headers=operator)
    body = await first.json()
    assert len(body["entries"]) == 1
    assert body["total"] >= len(POISON)
    after = await client.get(f"{URL}?limit=1&cursor={body['next_cursor']}", headers=operator)
    assert (await after.json())["entries"][0]["id"] > body["entries"][0]["id"]
    reads = await audited(client, "dead_letters.read")
    assert reads[-1] == ("ok", 1)
    denied = await client.get(URL, headers=officer)
    assert_problem(denied, await denied.json(), 403)
    assert (await audited(client, "dead_letters.read"))[-1] == ("denied", None)
    nobody = await client.get(URL, headers={"Authorization": "Bearer nope"})
    assert_problem(nobody, await nobody.json(), 401)
    bad = await client.get(f"{URL}?limit=0", headers=operator)
    assert_problem(bad, await bad.json(), 400)


async def test_replay_stores_what_a_fix_made_storable_and_keeps_the_rest(
    client: Client, raw_redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan from year 9500 is past the range the log stores (2000 to 2199): a dead letter. After the fix
    (here: the range widened) a replay stores it in the scan log and forgets it; the others
    stay, with a reason and the time of the replay that could not store them; the replay is
    audited with the rows it stored; replaying again stores nothing twice."""
    operator = await role_headers(client, "operator", name="ops")
    fixable = parts(at_ms=YEAR_9500_MS)
    await put(client, raw_redis, [{b"r": fixable.encode()}, POISON[0][1], POISON[3][1]])
    await client.app[DRAIN].drain_all()
    assert len(await mine(client, operator)) == 3
    monkeypatch.setattr(scan_store, "SCAN_TIME_RANGE_MS", (0, int(YEAR_9500_MS) + 1))
    response = await client.post(f"{URL}/replay", headers=operator)
    report = await response.json()
    assert response.status == 200, report
    assert report["replayed"] >= 1  # the table is the run's: other tests' letters replay too
    assert report["failed"] >= 2
    assert await stored_scan_ids(client.app[POOL], [fixable.split("|", 1)[0]]) == {
        fixable.split("|")[0]
    }
    left = await mine(client, operator)
    assert len(left) == 2
    assert all(e["last_tried"] is not None and e["reason"] for e in left)
    assert (await audited(client, "dead_letters.replay"))[-1] == ("ok", report["replayed"])
    again = await (await client.post(f"{URL}/replay", headers=operator)).json()
    assert again["replayed"] == 0
    officer = await role_headers(client, "health_officer", name="officer")
    denied = await client.post(f"{URL}/replay", headers=officer)
    assert_problem(denied, await denied.json(), 403)


async def test_the_cli_lists_and_replays_dead_letters(
    client: Client, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    """``passcode dead-letters list`` prints the count and each letter with its reason;
    ``passcode dead-letters replay`` reports what it stored and what still fails (exit 1
    while some do)."""
    await put(client, raw_redis, [BY_NAME[FAR_OFFSET]])
    await client.app[DRAIN].drain_all()
    listed = await cli(settings, "dead-letters", "list", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    assert "dead letter(s)" in listed.stdout
    assert "9999-12-31T23:59:59-23:59" in listed.stdout
    assert "outside the range" in listed.stdout
    replayed = await cli(settings, "dead-letters", "replay")
    assert replayed.returncode == 1, replayed.stderr
    assert "replayed 0, still failing" in replayed.stdout


async def test_readyz_reports_a_drain_task_that_keeps_failing_and_it_recovers(
    aiohttp_client: ClientFactory,
    settings: Settings,
    raw_redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the dead-letter table away, the drain's pass fails on each try (an unexpected
    error, not a store outage): the supervisor restarts it with backoff, logs it once at ERROR
    with the cause, and /readyz answers 200 with status degraded and the task ``failing``.
    With the table back, the next restart keeps the poison, stores the good scans, and
    /readyz is ok again."""
    app = create_app(settings)
    app[SUPERVISOR] = Supervisor(first_delay=0.01, max_delay=0.05, healthy_run=0.5)
    client = await aiohttp_client(app)
    good = good_entries(4)
    pool = client.app[POOL]
    await pool.execute("ALTER TABLE scan_dead_letters RENAME TO scan_dead_letters_away")
    try:
        with caplog.at_level(logging.INFO, logger="passcode.workers.supervisor"):
            await put(client, raw_redis, [BY_NAME[FAR_OFFSET], *(fields for _, fields in good)])
            async with asyncio.timeout(15):
                while True:
                    response = await client.get("/readyz")
                    ready = await response.json()
                    if ready["tasks"]["scan-drain"]["state"] == "failing":
                        break
                    await asyncio.sleep(0.02)
        assert response.status == 200
        assert ready["status"] == "degraded"
        assert ready["tasks"]["scan-drain"]["last_error"] == "UndefinedTableError"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert errors[0].exc_info is not None
        assert "scan-drain" in errors[0].getMessage()
    finally:
        await pool.execute("ALTER TABLE scan_dead_letters_away RENAME TO scan_dead_letters")
    ids = [scan_id_of(fields) for _, fields in good]
    async with asyncio.timeout(15):
        while True:
            ready = await (await client.get("/readyz")).json()
            if await stored_scan_ids(pool, ids) == set(ids) and ready["status"] == "ok":
                break
            await asyncio.sleep(0.02)
    assert ready["dead_letters"] == 1


async def test_a_marking_completes_with_a_poison_entry_in_the_stream(
    aiohttp_client: ClientFactory,
    settings: Settings,
    make_token: TokenFactory,
    raw_redis: aioredis.Redis,
) -> None:
    """A poison entry (a terminal time UTC cannot hold) sits in the stream before a real scan
    at the place, neither drained yet (the drain waits an hour between passes). The marking's
    wait for the stream drains both: the poison becomes a dead letter, the scan is stored, the
    marking is done and the citizen yellow (on main the drain pass raised and the marking went
    to failed)."""
    slow = dataclasses.replace(settings, drain_interval=3600)
    client = await aiohttp_client(create_app(slow))
    place = f"Poisoned Mall {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    person = await new_citizen(client, make_token)
    since = datetime.now(UTC) - timedelta(hours=1)
    await put(client, raw_redis, [BY_NAME[FAR_OFFSET], BY_NAME["terminal time 0001 +23:59"]] * 2)
    assert (await verify_ok(client, key, person.code))["decision"] == "admit"
    assert await scans_at(client, place) == 0
    body = {
        "place": place,
        "since": since.isoformat(),
        "until": datetime.now(UTC).isoformat(),
        "note": "poison in the backlog",
    }
    done = await finished(client, (await mark(client, body))["id"])
    assert (done["state"], done["affected"], done["error"]) == ("done", 1, None)
    assert await colors_agree(client, person.subject) is Color.YELLOW
    assert client.app[DRAIN].dead_lettered >= 2
