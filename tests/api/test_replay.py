"""Replay (issue 4): the same pass scanned at two different places within the replay window is
admitted (re-entry is normal) but flagged in the scan record, and the authority can count it.

Runs on the real servers: scans go through the verify script in Redis and the drain into
Postgres; the flags are read back from ``scans`` over the test's own connection.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import CACHE, DRAIN
from passcode.testing import auth
from tests.helpers import ADMIN, TokenFactory, citizen_pass, claims_of, new_terminal, verify_ok

Client = TestClient[Any, Any]


async def stored_replays(client: Client, database_url: str, scan_ids: list[str]) -> list[bool]:
    """The stored replay flag of each scan id, in order (after draining the stream); each id
    must be stored exactly once."""
    await client.app[DRAIN].drain_all()
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT scan_id, replay FROM scans WHERE scan_id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in scan_ids],
            timeout=5,
        )
    finally:
        await conn.close()
    assert len(rows) == len(set(scan_ids)), rows
    by_id = {str(row["scan_id"]): row["replay"] for row in rows}
    return [by_id[s] for s in scan_ids]


async def scan(client: Client, key: str, code: str) -> str:
    """Verify ``code`` at the terminal with ``key``; it must be admitted. Returns the scan id."""
    scan_id = str(uuid.uuid4())
    body = await verify_ok(client, key, code, scan_id=scan_id)
    assert body["decision"] == "admit", body
    return scan_id


def place(label: str) -> str:
    return f"Replay {label} {uuid.uuid4().hex[:8]}"


async def test_same_pass_at_two_places_is_admitted_and_the_second_scan_flagged(
    client: Client, make_token: TokenFactory, database_url: str
) -> None:
    """Place A then place B within the window: both admitted, only the scan at B is stored as a
    replay; going back to A is again a different place, so it is flagged too."""
    _, key_a = await new_terminal(client, place("A"))
    _, key_b = await new_terminal(client, place("B"))
    code = await citizen_pass(client, make_token)
    first = await scan(client, key_a, code)
    second = await scan(client, key_b, code)
    back = await scan(client, key_a, code)
    assert await stored_replays(client, database_url, [first, second, back]) == [
        False,
        True,
        True,
    ]


async def test_same_pass_twice_at_one_place_is_reentry_not_replay(
    client: Client, make_token: TokenFactory, database_url: str
) -> None:
    """Two scans at the same place, even by two terminals there, are re-entry: never flagged.
    Another citizen's pass scanned elsewhere does not flag this one."""
    gate = place("Gate")
    _, key_1 = await new_terminal(client, gate)
    _, key_2 = await new_terminal(client, gate)
    _, key_other = await new_terminal(client, place("Elsewhere"))
    code = await citizen_pass(client, make_token)
    other = await citizen_pass(client, make_token)
    ids = [
        await scan(client, key_1, code),
        await scan(client, key_other, other),
        await scan(client, key_1, code),
        await scan(client, key_2, code),
    ]
    assert await stored_replays(client, database_url, ids) == [False, False, False, False]


async def test_a_scan_at_another_place_after_the_window_is_not_a_replay(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory, database_url: str
) -> None:
    """With a one-second window, a scan at place B once the window since the scan at place A has
    closed is an ordinary scan. The window is the lifetime Redis gives the pass's last-place
    marker (``EX``: Redis's clock, not the service's injectable one), so rather than sleep past
    it the test checks that the lifetime is one window, then ends it as Redis's expiry would."""
    client: Client = await aiohttp_client(
        create_app(dataclasses.replace(settings, replay_window=1))
    )
    _, key_a = await new_terminal(client, place("A"))
    _, key_b = await new_terminal(client, place("B"))
    code = await citizen_pass(client, make_token)
    first = await scan(client, key_a, code)
    cache, claims = client.app[CACHE], claims_of(client, code)
    marker = cache.replay_key(cache.shard_of(claims.subject), claims.token_id)
    assert 0 < await cache.client.pttl(marker) <= 1000  # it lives one window, no longer
    assert await cache.client.delete(marker) == 1  # the window is over
    later = await scan(client, key_b, code)
    assert await stored_replays(client, database_url, [first, later]) == [False, False]


async def test_a_retried_replay_scan_is_stored_once(
    client: Client, make_token: TokenFactory, database_url: str
) -> None:
    """A terminal retrying the flagged scan with its scan id: admitted again, stored once, still
    flagged, and the retry does not count as a second replay."""
    pa, pb = place("A"), place("B")
    _, key_a = await new_terminal(client, pa)
    _, key_b = await new_terminal(client, pb)
    code = await citizen_pass(client, make_token)
    first = await scan(client, key_a, code)
    second = str(uuid.uuid4())
    for _ in range(3):
        body = await verify_ok(client, key_b, code, scan_id=second)
        assert body["decision"] == "admit"
    assert await stored_replays(client, database_url, [first, second]) == [False, True]
    counted = await client.get("/v1/admin/replays", headers=ADMIN)
    assert counted.status == 200
    assert {"place": pb, "replays": 1} in (await counted.json())["by_place"]


async def test_the_authority_counts_replays_by_place_and_time(
    client: Client, make_token: TokenFactory, database_url: str
) -> None:
    """``GET /v1/admin/replays`` counts flagged scans in the window, per place (most first);
    a window before the scans counts none of them; bad bounds are 400."""
    pa, pb, pc = place("A"), place("B"), place("C")
    _, key_a = await new_terminal(client, pa)
    _, key_b = await new_terminal(client, pb)
    _, key_c = await new_terminal(client, pc)
    start = datetime.now(UTC) - timedelta(seconds=5)
    one, two = await citizen_pass(client, make_token), await citizen_pass(client, make_token)
    ids = [
        await scan(client, key_a, one),
        await scan(client, key_b, one),  # replay at B
        await scan(client, key_a, two),
        await scan(client, key_b, two),  # replay at B
        await scan(client, key_c, two),  # replay at C
    ]
    assert await stored_replays(client, database_url, ids) == [False, True, False, True, True]

    response = await client.get("/v1/admin/replays", headers=ADMIN)
    assert response.status == 200, await response.text()
    body = await response.json()
    by_place = {item["place"]: item["replays"] for item in body["by_place"]}
    assert (by_place.get(pa), by_place[pb], by_place[pc]) == (None, 2, 1)
    assert body["replays"] >= 3
    counts = [item["replays"] for item in body["by_place"]]
    assert counts == sorted(counts, reverse=True)
    until = datetime.fromisoformat(body["until"])
    assert datetime.fromisoformat(body["since"]) == until - timedelta(hours=24)

    params = {"since": start.isoformat(), "until": (start + timedelta(minutes=10)).isoformat()}
    windowed = await (await client.get("/v1/admin/replays", params=params, headers=ADMIN)).json()
    assert {"place": pb, "replays": 2} in windowed["by_place"]
    before = {
        "since": (start - timedelta(days=2)).isoformat(),
        "until": (start - timedelta(days=1)).isoformat(),
    }
    earlier = await (await client.get("/v1/admin/replays", params=before, headers=ADMIN)).json()
    assert pb not in {item["place"] for item in earlier["by_place"]}

    for bad in (
        {"since": "yesterday"},
        {"until": "2026-01-01T00:00:00"},  # no offset
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},  # reversed
        {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"},  # over 31 days
    ):
        rejected = await client.get("/v1/admin/replays", params=bad, headers=ADMIN)
        assert rejected.status == 400, (bad, await rejected.text())
        assert rejected.content_type == "application/problem+json"


async def test_replay_counts_need_the_admin_key(client: Client, make_token: TokenFactory) -> None:
    """No credential or an unknown key: 401; a citizen's token: 403."""
    missing = await client.get("/v1/admin/replays")
    assert missing.status == 401
    unknown = await client.get("/v1/admin/replays", headers=auth("not-the-admin-key"))
    assert unknown.status == 401
    citizen = await client.get("/v1/admin/replays", headers=auth(make_token()))
    assert citizen.status == 403
