"""Printed cards (纸质码) on the admin API, against real PostgreSQL and Redis: only community
workers issue, print, revoke and declare; every change is audited; a revocation reaches this
replica at once and another process within seconds."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jsonschema
import pytest
import zxingcpp
from PIL import Image

from passcode.api.schemas import CARD_REVOKE_REQUEST
from passcode.keys import CARDS, POOL
from passcode.testing import HEALTHY, auth
from tests.helpers import Client, claims_of, new_terminal, role_headers, verify_ok
from tests.live_server import LiveServer, live_settings

FULL_NAME = "欧阳小明"
MASKED = "欧**明"


async def audit_of(client: Client, action: str) -> list[asyncpg.Record]:
    async with client.app[POOL].acquire() as conn:
        return list(
            await conn.fetch("SELECT * FROM audit_log WHERE action = $1 ORDER BY id", action)
        )


async def issue(client: Client, worker: dict[str, str], **body: Any) -> dict[str, Any]:
    request = {"user_id": f"elder-{time.monotonic_ns()}", "name": FULL_NAME, **body}
    response = await client.post("/v1/admin/cards", json=request, headers=worker)
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    made: dict[str, Any] = await response.json()
    return made


async def test_only_community_workers_issue_cards_and_each_issue_is_audited(
    client: Client,
) -> None:
    """Operators, health officers and auditors get 403 (audited as denied); a community worker
    gets the card: a pass with the card claim, the masked name, 180 days by default, and an
    audit entry naming the worker, the serial and the pseudonymous subject."""
    body = {"user_id": "elder-roles", "name": FULL_NAME}
    for role in ("operator", "health_officer", "auditor"):
        refused = await client.post(
            "/v1/admin/cards", json=body, headers=await role_headers(client, role)
        )
        assert refused.status == 403
        assert "community_worker" in (await refused.json())["detail"]
    assert len([r for r in await audit_of(client, "card.issue") if r["outcome"] == "denied"]) == 3

    worker = await role_headers(client, "community_worker", name="worker-li")
    made = await issue(client, worker)
    claims = claims_of(client, made["code"])
    assert claims.card == bytes.fromhex(made["serial"])
    assert len(claims.card) == 16
    assert claims.expires_at - claims.issued_at == 180 * 86_400
    assert made["holder"] == {"name": MASKED}
    assert FULL_NAME not in str(made)
    png = Image.open(io.BytesIO(base64.b64decode(made["png_base64"])))
    assert [r.text for r in zxingcpp.read_barcodes(png.convert("L"))] == [made["code"]]
    (entry,) = [r for r in await audit_of(client, "card.issue") if r["outcome"] == "ok"]
    assert entry["actor"].startswith("worker-li")
    assert '"serial": "' + made["serial"] in entry["target"]
    assert FULL_NAME not in entry["target"]
    async with client.app[POOL].acquire() as conn:
        names = await conn.fetchval(
            "SELECT s.name_masked FROM cards c JOIN subjects s ON s.id = c.subject_id"
            " WHERE c.serial = $1",
            claims.card,
        )
    assert names == MASKED


async def test_a_card_is_judged_by_the_live_status_of_its_holder(client: Client) -> None:
    """A fresh card's holder has no status (deny); after the worker declares healthy for them
    the card admits (kind card); a fever declared next denies it at the next scan."""
    worker = await role_headers(client, "community_worker")
    made = await issue(client, worker, days=30)
    _, terminal_key = await new_terminal(client)
    first = await verify_ok(client, terminal_key, made["code"])
    assert first["kind"] == "card"
    assert first["decision"] == "deny"

    url = f"/v1/admin/cards/{made['serial']}/declarations"
    healthy = await client.post(url, json=HEALTHY, headers=worker)
    assert healthy.status == 201, await healthy.text()
    assert (await healthy.json())["status"]["color"] == "green"
    admitted = await verify_ok(client, terminal_key, made["code"])
    assert (admitted["decision"], admitted["kind"]) == ("admit", "card")
    assert admitted["holder"] == {"name": MASKED}

    fever = await client.post(url, json={**HEALTHY, "temperature_c": 39.2}, headers=worker)
    assert fever.status == 201
    assert (await fever.json())["status"]["color"] != "green"
    denied = await verify_ok(client, terminal_key, made["code"])
    assert denied["decision"] == "deny"
    entries = await audit_of(client, "card.declare")
    assert [e["outcome"] for e in entries[-2:]] == ["ok", "ok"]
    assert all(made["serial"] in e["target"] for e in entries[-2:])


async def test_declarations_for_a_holder_are_idempotent_and_need_the_role(client: Client) -> None:
    """The same Idempotency-Key twice stores one declaration (the retry says so) and one audit
    entry; a health officer may not declare for a card's holder."""
    worker = await role_headers(client, "community_worker")
    made = await issue(client, worker)
    url = f"/v1/admin/cards/{made['serial']}/declarations"
    headers = {**worker, "Idempotency-Key": "visit-1"}
    first = await client.post(url, json=HEALTHY, headers=headers)
    again = await client.post(url, json=HEALTHY, headers=headers)
    assert (first.status, again.status) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await first.json())["declaration_id"] == (await again.json())["declaration_id"]
    ok = [e for e in await audit_of(client, "card.declare") if made["serial"] in e["target"]]
    assert len(ok) == 1
    officer = await role_headers(client, "health_officer")
    assert (await client.post(url, json=HEALTHY, headers=officer)).status == 403


async def test_a_revoked_card_is_refused_at_once_and_revoking_again_changes_nothing(
    client: Client,
) -> None:
    """Revoking puts the serial in this replica's registry before the answer; a second revoke
    answers the first revocation and writes no second audit entry; declaring for a revoked
    card is 409."""
    worker = await role_headers(client, "community_worker")
    made = await issue(client, worker)
    serial = bytes.fromhex(made["serial"])
    registry = client.app[CARDS].registry
    assert not registry.is_revoked(serial)
    url = f"/v1/admin/cards/{made['serial']}/revoke"
    first = await client.post(url, json={"reason": "lost"}, headers=worker)
    assert first.status == 200, await first.text()
    assert registry.is_revoked(serial)
    again = await client.post(url, json={"reason": "lost"}, headers=worker)
    assert (await again.json())["revoked_at"] == (await first.json())["revoked_at"]
    assert (
        len([e for e in await audit_of(client, "card.revoke") if made["serial"] in e["target"]])
        == 1
    )
    declare = await client.post(
        f"/v1/admin/cards/{made['serial']}/declarations", json=HEALTHY, headers=worker
    )
    assert declare.status == 409


async def test_the_sheet_and_png_print_the_card_again(client: Client) -> None:
    """GET sheet.svg holds the masked name and no full name; card.png decodes to the code."""
    worker = await role_headers(client, "community_worker")
    made = await issue(client, worker)
    sheet = await client.get(made["sheet_url"], headers=worker)
    assert sheet.status == 200
    assert sheet.content_type == "image/svg+xml"
    text = await sheet.text()
    assert MASKED in text
    assert FULL_NAME not in text
    png = await client.get(made["png_url"], headers=worker)
    image = Image.open(io.BytesIO(await png.read()))
    assert [r.text for r in zxingcpp.read_barcodes(image.convert("L"))] == [made["code"]]
    missing = await client.get(f"/v1/admin/cards/{'00' * 16}/sheet.svg", headers=worker)
    assert missing.status == 404
    assert (await client.get(made["sheet_url"], headers=auth("nope"))).status == 401


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u", "name": FULL_NAME, "days": 366},
        {"user_id": "u", "name": FULL_NAME, "days": 0},
        {"user_id": "u"},
        {"user_id": " u", "name": FULL_NAME},
        {"user_id": "u", "name": "\u202e"},
        {"user_id": "u", "name": FULL_NAME, "id_number": "110101199003074514"},
    ],
    ids=["366 days", "0 days", "no name", "spaced user id", "bidi name", "id number"],
)
async def test_bad_issue_requests_are_400_problems(client: Client, body: dict[str, Any]) -> None:
    """Out-of-range lifetimes, missing or hostile fields, and an ID number are refused."""
    worker = await role_headers(client, "community_worker")
    response = await client.post("/v1/admin/cards", json=body, headers=worker)
    assert response.status == 400
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/admin/cards/zz/revoke", {"reason": "lost"}, 404),
        ("/v1/admin/cards/ABCDEF0123456789/revoke", {"reason": "lost"}, 404),
        (f"/v1/admin/cards/{'ab' * 16}/revoke", {"reason": "lost"}, 404),
        (f"/v1/admin/cards/{'ab' * 16}/revoke", {"reason": "because"}, 400),
        (f"/v1/admin/cards/{'ab' * 16}/revoke", {}, 400),
    ],
)
async def test_bad_revocations_are_problems(
    client: Client, path: str, body: dict[str, Any], status: int
) -> None:
    """A serial that is not lower-case hex or not on file is 404; a reason outside the list
    (free text could carry personal data) is 400."""
    if status == 400:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, CARD_REVOKE_REQUEST)
    worker = await role_headers(client, "community_worker")
    response = await client.post(path, json=body, headers=worker)
    assert response.status == status
    assert response.content_type == "application/problem+json"


async def test_a_revocation_reaches_another_process_within_seconds(
    client: Client, database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """A card revoked through a `passcode serve` process is in this process's registry within a
    few seconds (the catalog poll), without a restart."""
    settings = live_settings(database_url, redis_url, redis_prefix, tmp_path, tag="cards")
    server = LiveServer(settings, tmp_path / "server.log")
    await asyncio.to_thread(server.start)
    try:
        worker = await role_headers(client, "community_worker")
        made = await issue(client, worker)
        serial = bytes.fromhex(made["serial"])
        registry = client.app[CARDS].registry
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{server.url}/v1/admin/cards/{made['serial']}/revoke",
                json={"reason": "lost"},
                headers=worker,
            )
            assert response.status == 200, await response.text()
        started = time.monotonic()
        while not registry.is_revoked(serial):
            assert time.monotonic() - started < 5, "revocation not seen within 5 s"
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(server.stop)
