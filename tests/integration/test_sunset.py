"""The sunset end to end on real PostgreSQL and Redis, through the CLI as an operator runs it.

Citizens are seeded through the API (declarations with an Idempotency-Key, scans at a terminal,
test results, rulings, a printed card, an exposure from a risk-place marking, venue check-ins,
a dead letter naming one of them), drained, and the service stopped. Then ``passcode sunset``:
refused without the deployment's name or with a wrong one (nothing changes), run with it, its
report verified (and a tampered copy refused). The proof: a ``pg_dump`` and a SCAN of all of
Redis (tests/trace_scan.py) find each seeded person's user id, keyed hash, sealed id, masked
name and scan ids before, and none of them after.

Each test gets a database of its own: the sunset empties every citizen table of its database.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import CACHE, DRAIN
from passcode.store import sunset as sunset_store
from passcode.store.sunset import CITIZEN_TABLES, KEPT_TABLES
from passcode.testing import auth
from tests.api.erasure_history import History, cjk_name, seed_history
from tests.helpers import (
    ADMIN,
    ClientFactory,
    TokenFactory,
    cli,
    finished,
    mark,
    new_terminal,
    open_stores,
    parts,
    redis_client,
)
from tests.trace_scan import Needle, trace_settings


@pytest.fixture
async def own_settings(settings: Settings, base_database_url: str) -> AsyncIterator[Settings]:
    """The test's settings on a database made for it alone, dropped after it."""
    name = f"passcode_sunset_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base_database_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(base_database_url)._replace(path=f"/{name}"))
        yield dataclasses.replace(settings, database_url=url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Seeded:
    people: list[History]
    places: dict[str, str]  # place → type
    jwks: Path


async def _seed(aiohttp_client: ClientFactory, make_token: TokenFactory, s: Settings) -> Seeded:
    """Two citizens' histories through the API, every scan drained; then the service stops."""
    client = await aiohttp_client(create_app(s))
    metro = f"Metro {uuid.uuid4().hex[:8]}"
    shop = f"Shop {uuid.uuid4().hex[:8]}"
    for place, kind in ((metro, "metro"), (shop, "shop")):
        made = await client.put(
            f"/v1/admin/places/{place}", json={"type": kind, "name": place}, headers=ADMIN
        )
        assert made.status == 201, await made.text()
    _, key = await new_terminal(client, metro)
    people = []
    for _ in range(2):
        name, masked = cjk_name()
        people.append(await seed_history(client, make_token, key, metro, name=name, masked=masked))
    since = datetime.now(UTC) - timedelta(hours=1)
    window = {"since": since.isoformat(), "until": datetime.now(UTC).isoformat()}
    marked = await mark(client, {"place": metro, **window, "note": "a case was here"})
    assert (await finished(client, marked["id"]))["state"] == "done"
    poster = await client.post(f"/v1/admin/places/{shop}/poster", headers=ADMIN)
    assert poster.status == 201, await poster.text()
    code = (await poster.json())["code"]
    for person in people:
        checkin_id = str(uuid.uuid4())
        done = await client.post(
            "/v1/checkins",
            json={"place_code": code, "checkin_id": checkin_id},
            headers=auth(person.token),
        )
        assert done.status in {200, 201}, await done.text()
        person.scan_ids.append(checkin_id)
    # An entry the drain cannot store (an unknown decision) naming the first person.
    poison_id = str(uuid.uuid4())
    record = parts(scan_id=poison_id, subject=people[0].subject.hex(), decision="maybe")
    cache = client.app[CACHE]
    raw = redis_client(s)
    try:
        await raw.xadd(cache.stream_key(0), {b"r": record.encode()})
    finally:
        await raw.aclose()
    people[0].scan_ids.append(poison_id)
    await client.app[DRAIN].drain_all()
    keys = await client.get("/v1/keys")
    jwks = s.data_dir / "published-keys.json"
    jwks.write_bytes(await keys.read())
    await client.close()  # a deployment is retired once its service has stopped
    return Seeded(people, {metro: "metro", shop: "shop"}, jwks)


def needles(people: list[History]) -> list[Needle]:
    """What must be found of each person before the sunset and nowhere after it. Not their
    random subject id: the audit log the sunset keeps names it (card.issue), and with the
    subjects table gone it leads to no one."""
    found: list[Needle] = []
    for person in people:
        found += [person.user_id, person.user_hash, person.sealed, person.masked]
        found += person.scan_ids
    return found


async def _state(s: Settings) -> dict[str, Any]:
    async with open_stores(s) as (pool, cache):
        counts = await sunset_store.citizen_counts(pool, timeout=5)
        audit = await pool.fetch("SELECT action, outcome FROM audit_log ORDER BY id")
        kept = await sunset_store.kept_scan_counts(pool, timeout=5)
        partitions = await pool.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'scans'::regclass"
        )
        client = redis_client(s)
        try:
            redis_keys = [k async for k in client.scan_iter(match=cache.key_pattern())]
        finally:
            await client.aclose()
    return {
        "counts": counts,
        "audit": [(r["action"], r["outcome"]) for r in audit],
        "kept": kept,
        "partitions": partitions,
        "redis_keys": sorted(redis_keys),
    }


async def _expected_scan_counts(s: Settings) -> list[tuple[str, str, int]]:
    async with open_stores(s) as (pool, _):
        rows = await pool.fetch(
            "SELECT (s.scanned_at AT TIME ZONE 'UTC')::date AS day,"
            " coalesce(p.type, 'untyped') AS t, count(*) AS n"
            " FROM scans s LEFT JOIN places p ON p.id = s.place GROUP BY 1, 2 ORDER BY 1, 2"
        )
    return [(r["day"].isoformat(), r["t"], int(r["n"])) for r in rows]


async def test_sunset_destroys_every_citizen_trace_and_keeps_counts_and_a_signed_report(
    aiohttp_client: ClientFactory, make_token: TokenFactory, own_settings: Settings
) -> None:
    """Seeded citizens' records are all in PostgreSQL and Redis before (the control: the proof
    finds every needle); a refused sunset changes nothing; the confirmed one empties every
    citizen table and drops every scan partition, deletes every Redis key of the deployment,
    keeps the audit log and the scans' counts per day and place type exactly, writes a report
    that verifies against the published keys; and no needle is found anywhere afterwards."""
    s = own_settings
    seeded = await _seed(aiohttp_client, make_token, s)
    wanted = needles(seeded.people)
    before_trace = await trace_settings(s, wanted)
    # The control: every needle is found before, but the user ids, which are stored sealed only.
    user_ids = [p.user_id for p in seeded.people]
    assert before_trace.missing() == user_ids, before_trace.missing()
    assert all("pg_dump" in before_trace.sources(n) for n in wanted if n not in user_ids)
    before = await _state(s)
    counts = before["counts"]
    for table in CITIZEN_TABLES:
        assert counts[table] > 0, f"nothing seeded in {table}: the test would prove nothing"
    assert before["redis_keys"], "no Redis key seeded"
    expected = await _expected_scan_counts(s)
    assert {t for _, t, _ in expected} == {"metro", "shop"}
    deployment = urlsplit(s.database_url or "").path.lstrip("/")
    report = s.data_dir / "sunset-report.json"

    missing = await cli(s, "sunset", "--report", str(report))
    wrong = await cli(s, "sunset", "--confirm-deployment", "production", "--report", str(report))
    for refused in (missing, wrong):
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert f"--confirm-deployment {deployment}" in refused.stderr
        assert "nothing was changed" in refused.stderr
    assert not report.exists()
    after_refusals = await _state(s)
    assert after_refusals["audit"] == [*before["audit"], *[("sunset.run", "denied")] * 2]
    assert {k: v for k, v in after_refusals.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }

    ran = await cli(s, "sunset", "--confirm-deployment", deployment, "--report", str(report))
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert f"sunset of deployment {deployment!r}" in ran.stdout
    after = await _state(s)
    assert after["counts"] == dict.fromkeys(CITIZEN_TABLES, 0)
    assert after["partitions"] == 0
    assert after["redis_keys"] == []
    assert after["audit"] == [*after_refusals["audit"], ("sunset.run", "ok")]
    assert [(c.day, c.place_type, c.scans) for _, c in after["kept"]] == expected

    document = json.loads(report.read_text(encoding="utf-8"))
    body = document["report"]
    assert body["deployment"] == deployment
    assert body["destroyed"]["postgres_rows"] == {
        **counts,
        "scan_partitions": before["partitions"],
    }
    # Every status copy went; rate limits and replay marks may have expired meanwhile.
    assert body["destroyed"]["redis_keys"]["st"] == counts["statuses"]
    assert sum(body["destroyed"]["redis_keys"].values()) <= len(before["redis_keys"])
    assert body["kept"]["audit_log_rows"] == len(after["audit"])
    assert [(c["day"], c["place_type"], c["scans"]) for c in body["kept"]["scan_counts"]] == (
        expected
    )
    checked = await cli(s, "sunset", "verify", str(report), "--jwks", str(seeded.jwks))
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    assert "the signature verifies" in checked.stdout
    assert (await cli(s, "sunset", "verify", str(report))).returncode == 0  # the key folder

    body["kept"]["scan_counts"][0]["scans"] += 1
    tampered = s.data_dir / "tampered.json"
    tampered.write_text(json.dumps(document), encoding="utf-8")
    refused = await cli(s, "sunset", "verify", str(tampered), "--jwks", str(seeded.jwks))
    assert refused.returncode == 1
    assert "was changed" in refused.stderr

    after_trace = await trace_settings(s, wanted)
    assert after_trace.found() == {}, after_trace.found()
    again = await cli(s, "sunset", "--confirm-deployment", deployment, "--report", str(report))
    assert again.returncode == 2  # the report file is never overwritten
    assert "nothing was changed" in again.stderr


async def test_every_table_is_either_destroyed_or_kept_for_a_reason(
    own_settings: Settings,
) -> None:
    """A migration adding a table must say whether the sunset destroys it or keeps it (and
    why): otherwise a new kind of citizen record would outlive the sunset unnoticed."""
    async with open_stores(own_settings) as (pool, _):
        tables = await sunset_store.table_names(pool, timeout=5)
    assert tables == set(CITIZEN_TABLES) | set(KEPT_TABLES)
    assert not set(CITIZEN_TABLES) & set(KEPT_TABLES)
