"""GET /v1/me/data on real PostgreSQL and Redis: a seeded history comes back whole (its
declarations, status and reason, overrides, exposures with their place and window, test
results, cards and scans), valid by the documented schema; another citizen's records never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient

from passcode.api.schemas import MY_DATA
from passcode.testing import auth
from tests.api.erasure_history import cjk_name, seed_history
from tests.helpers import TokenFactory, finished, mark, new_terminal

Client = TestClient[Any, Any]
PLACE = "My Data Mall, Gate 2"


async def my_data(client: Client, token: str) -> dict[str, Any]:
    response = await client.get("/v1/me/data", headers=auth(token))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await response.json()
    jsonschema.validate(body, MY_DATA)
    return body


async def test_the_copy_holds_the_whole_seeded_history_and_nothing_of_another_citizen(
    client: Client, make_token: TokenFactory
) -> None:
    """Two declarations (one with its Idempotency-Key), the green override's reason code, the
    negative test, the revoked card by serial and state, both scans with place and decision,
    and the exposure of a risk-place marking with its place and window; the other citizen's
    scans and card are not in it."""
    _, key = await new_terminal(client, PLACE)
    mine, theirs = [
        await seed_history(client, make_token, key, PLACE, name=n, masked=m)
        for n, m in (cjk_name(), cjk_name())
    ]
    start = datetime.now(UTC) - timedelta(hours=1)
    marking = await mark(
        client,
        {
            "place": PLACE,
            "since": start.isoformat(),
            "until": datetime.now(UTC).isoformat(),
            "color": "yellow",
            "note": "copy test",
        },
    )
    assert (await finished(client, marking["id"]))["state"] == "done"

    body = await my_data(client, mine.token)

    assert body["subject"]["name_masked"] == mine.masked
    assert [d["idempotency_key"] is None for d in body["declarations"]] == [True, False]
    assert [(o["color"], o["reason"]) for o in body["overrides"]] == [
        ("green", "quarantine_release")
    ]
    assert [t["result"] for t in body["test_results"]] == ["negative"]
    assert [(c["serial"], c["state"]) for c in body["cards"]] == [(mine.card_serial, "revoked")]
    assert sorted(s["scan_id"] for s in body["scans"]) == sorted(mine.scan_ids)
    assert {(s["place"], s["decision"], s["kind"]) for s in body["scans"]} == {
        (PLACE, "admit", "passcode")
    }
    [exposure] = body["exposures"]
    assert (exposure["place"], exposure["color"]) == (PLACE, "yellow")
    assert datetime.fromisoformat(exposure["window_start"]) == start
    assert body["status"]["color"] == "yellow"
    assert body["status"]["reason"] is not None
    text = str(body)
    assert not any(sid in text for sid in theirs.scan_ids)
    assert theirs.card_serial not in text
    assert theirs.masked not in text


async def test_a_citizen_of_whom_nothing_is_held_gets_empty_lists(
    client: Client, make_token: TokenFactory
) -> None:
    """A signed-in citizen who never declared gets a copy with no subject and empty lists."""
    body = await my_data(client, make_token())
    assert body["subject"] is None
    assert body["status"] is None
    assert all(body[k] == [] for k in ("declarations", "scans", "cards", "exposures"))


async def test_the_copy_needs_a_valid_id_token(client: Client, make_token: TokenFactory) -> None:
    """No token, or a terminal key in its place, is a 401 problem."""
    assert (await client.get("/v1/me/data")).status == 401
    _, key = await new_terminal(client, PLACE)
    assert (await client.get("/v1/me/data", headers=auth(key))).status == 401
