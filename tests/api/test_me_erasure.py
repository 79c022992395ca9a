"""DELETE /v1/me and POST /v1/admin/erasures on real PostgreSQL and Redis, and the proof: after
a deletion a pg_dump of the database and a scan of Redis find none of the person's user id,
keyed hash, sealed id, masked name or scan ids, while another citizen's are all still found."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import POOL
from passcode.testing import HEALTHY, auth
from tests.api.erasure_history import History, cjk_name, seed_history
from tests.helpers import ADMIN, FakeClock, TokenFactory, new_terminal, role_headers
from tests.trace_scan import trace_settings

Client = TestClient[Any, Any]
PLACE = "Erasure Station, Exit B"


async def citizens(
    client: Client, make_token: TokenFactory, *, open_ruling: bool = False
) -> tuple[History, History]:
    _, key = await new_terminal(client, PLACE)
    made = []
    for ruling in (open_ruling, False):
        name, masked = cjk_name()
        made.append(
            await seed_history(
                client, make_token, key, PLACE, name=name, masked=masked, open_ruling=ruling
            )
        )
    return made[0], made[1]


async def delete_me(client: Client, token: str, status: int = 200) -> dict[str, Any]:
    response = await client.delete("/v1/me", headers=auth(token))
    body: dict[str, Any] = await response.json()
    assert response.status == status, body
    return body


async def traced(client: Client, who: History) -> tuple[int, int]:
    """(scans at the place naming them, scans of them) as tracing answers."""
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    at = await client.get(
        "/v1/admin/trace/place",
        params={"place": PLACE, "since": since, "until": until, "limit": "1000"},
        headers=ADMIN,
    )
    assert at.status == 200, await at.text()
    at_place = [s for s in (await at.json())["entries"] if s["scan_id"] in who.scan_ids]
    of = await client.post(
        "/v1/admin/trace/citizen",
        json={"user_id": who.user_id, "since": since, "until": until},
        headers=ADMIN,
    )
    assert of.status == 200, await of.text()
    return len(at_place), len((await of.json())["entries"])


async def test_deletion_leaves_no_trace_in_a_pg_dump_or_redis_and_spares_the_other_citizen(
    client: Client, settings: Settings, make_token: TokenFactory
) -> None:
    """Before: both citizens' needles are found (the control). After DELETE /v1/me: none of the
    deleted one's is found anywhere (their subject id only in audit entries written before,
    which lead to no one now); every one of the other's still is."""
    gone, kept = await citizens(client, make_token)
    needles = [*gone.needles().values(), *kept.needles().values()]
    before = await trace_settings(settings, needles)
    # The user id itself is never stored in the clear (only keyed and sealed): absent before
    # too; every other needle of both citizens is found.
    assert before.missing() == [gone.user_id.encode(), kept.user_id.encode()]

    assert await delete_me(client, gone.token) == {"erased": True, "kept": []}

    after = await trace_settings(settings, needles)
    for what, needle in gone.needles().items():
        assert after.hits[needle] == [], (what, after.hits[needle])
    for what, needle in kept.needles().items():
        assert after.hits[needle] or what == "user id", what
    subject_hits = (await trace_settings(settings, [gone.subject])).hits[gone.subject]
    assert {hit.source for hit in subject_hits} <= {"pg_dump"}
    assert all("audit_log" in hit.where for hit in subject_hits), subject_hits


async def test_after_deletion_the_pass_is_no_declaration_and_tracing_finds_nothing(
    client: Client, make_token: TokenFactory
) -> None:
    """GET /v1/pass answers no-declaration; tracing by place and by citizen finds none of their
    scans while it finds the other's; a new declaration gives a pass again."""
    gone, kept = await citizens(client, make_token)
    assert await traced(client, gone) == (2, 2)
    await delete_me(client, gone.token)
    response = await client.get("/v1/pass", headers=auth(gone.token))
    assert response.status == 404
    assert (await response.json())["type"].endswith("/no-declaration")
    assert await traced(client, gone) == (0, 0)
    assert await traced(client, kept) == (2, 2)
    again = await client.post("/v1/declarations", json=HEALTHY, headers=auth(gone.token))
    assert again.status == 201
    assert (await client.get("/v1/pass", headers=auth(gone.token))).status == 200


async def test_deletion_is_idempotent_and_audited_without_the_user_id(
    client: Client, make_token: TokenFactory
) -> None:
    """A second DELETE answers the same; each is an audit entry (subject.erase) whose target
    holds a random erasure id, and neither the user id, the subject id nor the keyed hash."""
    gone, _ = await citizens(client, make_token)
    first = await delete_me(client, gone.token)
    assert await delete_me(client, gone.token) == first
    rows = await client.app[POOL].fetch(
        "SELECT actor, target::text AS target FROM audit_log WHERE action = 'subject.erase'"
        " ORDER BY id DESC LIMIT 2"
    )
    assert [r["actor"] for r in rows] == ["citizen", "citizen"]
    assert len({r["target"] for r in rows}) == 2  # two erasure ids
    for row in rows:
        assert "erasure_id" in row["target"]
        for secret in (gone.user_id, gone.subject.hex(), gone.user_hash.hex()):
            assert secret not in row["target"]


async def test_an_old_id_token_cannot_delete(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory
) -> None:
    """A token issued more than the sign-in window (300 s) before the service's clock is a 401
    sign-in-again problem and erases nothing; at the window's edge it erases."""
    clock = FakeClock(time.time() + 301)
    client = await aiohttp_client(create_app(replace(settings, clock=clock)))
    token = make_token()
    assert (await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))).status == 201
    refused = await delete_me(client, token, status=401)
    assert refused["type"].endswith("/sign-in-again")
    assert "sign in again" in refused["detail"]
    assert (await client.get("/v1/pass", headers=auth(token))).status == 200
    clock.at -= 2
    assert (await delete_me(client, token))["erased"] is True
    assert (await client.get("/v1/pass", headers=auth(token))).status == 404


async def test_an_open_red_ruling_stays_and_the_answer_says_until_when(
    client: Client, make_token: TokenFactory
) -> None:
    """Under an open red override, deletion answers erased false with the ruling kept (until
    an authority ends it); a new declaration is red again, not a fresh green."""
    held, _ = await citizens(client, make_token, open_ruling=True)
    body = await delete_me(client, held.token)
    assert body == {
        "erased": False,
        "kept": [{"kind": "override", "color": "red", "reason": "positive_test", "until": None}],
    }
    assert (await client.get("/v1/pass", headers=auth(held.token))).status == 404
    again = await client.post("/v1/declarations", json=HEALTHY, headers=auth(held.token))
    assert again.status == 201
    assert (await again.json())["status"]["color"] == "red"


async def test_in_person_erasure_needs_a_health_officer_and_erases_the_same(
    client: Client, make_token: TokenFactory
) -> None:
    """An operator gets 403; a health officer erases by user id (audited with their name and
    an erasure id), after which the citizen's copy is empty."""
    gone, _ = await citizens(client, make_token)
    body = {"user_id": gone.user_id}
    operator = await role_headers(client, "operator")
    assert (await client.post("/v1/admin/erasures", json=body, headers=operator)).status == 403
    officer = await role_headers(client, "health_officer", name="desk-officer")
    response = await client.post("/v1/admin/erasures", json=body, headers=officer)
    assert response.status == 200, await response.text()
    assert await response.json() == {"erased": True, "kept": []}
    copy = await client.get("/v1/me/data", headers=auth(gone.token))
    assert (await copy.json())["declarations"] == []
    actor = await client.app[POOL].fetchval(
        "SELECT actor FROM audit_log WHERE action = 'subject.erase' AND outcome = 'ok'"
        " ORDER BY id DESC LIMIT 1"
    )
    assert "desk-officer" in actor
