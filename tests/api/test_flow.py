"""End to end on real servers: declare, fetch a pass, verify it at a terminal, scan recorded."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from passcode.keys import DRAIN, POOL
from passcode.store.scans import count_scans
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory


async def test_declare_then_pass_then_verify_admits_and_records_the_scan(
    client: TestClient[Any, Any], make_token: TokenFactory, terminal_key: str
) -> None:
    """A green citizen's fresh pass is admitted, with the masked name, and the scan is stored."""
    token = make_token(name="张小三")
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    body = await declared.json()
    assert body["status"]["color"] == "green"

    got = await client.get("/v1/pass", headers=auth(token))
    assert got.status == 200, await got.text()
    view = await got.json()
    assert view["code"].startswith("PC1:")
    assert view["holder"] == {"name": "张*三"}

    verified = await client.post(
        "/v1/verify", json={"code": view["code"]}, headers=auth(terminal_key)
    )
    assert verified.status == 200, await verified.text()
    result = await verified.json()
    assert result["decision"] == "admit"
    assert result["reason"] == "ok"
    assert result["holder"] == {"name": "张*三"}

    await client.app[DRAIN].drain_all()
    assert await count_scans(client.app[POOL], timeout=5) >= 1


async def test_override_to_red_denies_a_pass_issued_green(
    client: TestClient[Any, Any], make_token: TokenFactory, terminal_key: str
) -> None:
    """An authority's red ruling reaches verify at once: the green pass in hand is denied."""
    token = make_token(user_id="citizen-override-1")
    assert (await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))).status == 201
    code = (await (await client.get("/v1/pass", headers=auth(token))).json())["code"]
    ruled = await client.post(
        "/v1/admin/overrides",
        json={"user_id": "citizen-override-1", "color": "red", "reason": "positive_test"},
        headers=ADMIN,
    )
    assert ruled.status == 201, await ruled.text()
    result = await (
        await client.post("/v1/verify", json={"code": code}, headers=auth(terminal_key))
    ).json()
    assert result["decision"] == "deny"
    assert result["reason"] in {"status_red", "superseded"}
    assert result["color"] == "red"
