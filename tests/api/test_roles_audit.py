"""Roles on admin credentials and the append-only audit log (issue 5)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from passcode.keys import POOL
from passcode.store.admins import find_credential, list_credentials, revoke_credential
from passcode.testing import auth
from tests.helpers import ADMIN, role_headers

Client = TestClient[Any, Any]


async def audit_rows(client: Client) -> list[asyncpg.Record]:
    async with client.app[POOL].acquire() as conn:
        return list(await conn.fetch("SELECT * FROM audit_log ORDER BY id"))


async def test_each_role_reaches_only_its_own_endpoints(client: Client) -> None:
    """operator: terminals; health_officer: overrides and replay counts; auditor: the audit
    log. Anything else is 403 with a problem body naming the missing role."""
    operator = await role_headers(client, "operator")
    officer = await role_headers(client, "health_officer")
    auditor = await role_headers(client, "auditor")
    override = {"user_id": "u-roles", "color": "red", "reason": "positive_test"}

    made = await client.post("/v1/admin/terminals", json={"place": "Gate"}, headers=operator)
    assert made.status == 201
    terminal_id = (await made.json())["id"]
    for headers in (officer, auditor):
        refused = await client.post("/v1/admin/terminals", json={"place": "G"}, headers=headers)
        assert refused.status == 403
        body = await refused.json()
        assert "operator" in body["detail"]
        assert refused.content_type == "application/problem+json"
        revoke = await client.post(f"/v1/admin/terminals/{terminal_id}/revoke", headers=headers)
        assert revoke.status == 403

    assert (await client.post("/v1/admin/overrides", json=override, headers=officer)).status == 201
    assert (await client.get("/v1/admin/replays", headers=officer)).status == 200
    for headers in (operator, auditor):
        assert (
            await client.post("/v1/admin/overrides", json=override, headers=headers)
        ).status == 403
        assert (await client.get("/v1/admin/replays", headers=headers)).status == 403

    assert (await client.get("/v1/admin/audit", headers=auditor)).status == 200
    for headers in (operator, officer):
        assert (await client.get("/v1/admin/audit", headers=headers)).status == 403


async def test_a_credential_with_several_roles_has_each_and_a_revoked_one_none(
    client: Client,
) -> None:
    """Roles add up; after revocation the key is unknown (401), at once."""
    both = await role_headers(client, "operator", "auditor", name="ops-and-audit")
    assert (
        await client.post("/v1/admin/terminals", json={"place": "G"}, headers=both)
    ).status == 201
    assert (await client.get("/v1/admin/audit", headers=both)).status == 200
    pool = client.app[POOL]
    (credential,) = [
        c for c in await list_credentials(pool, timeout=5) if c.name == "ops-and-audit"
    ]
    assert await revoke_credential(pool, credential.id, timeout=5)
    assert (await client.get("/v1/admin/audit", headers=both)).status == 401
    assert not await revoke_credential(pool, uuid.uuid4(), timeout=5)


async def test_admin_keys_are_stored_only_as_their_hash(client: Client) -> None:
    """The table holds a 32-byte SHA-256 of the key, never the key; lookups go by hash."""
    headers = await role_headers(client, "auditor", name="hash-check")
    key = headers["Authorization"].removeprefix("Bearer ")
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch("SELECT * FROM admin_credentials WHERE name = 'hash-check'")
    (row,) = rows
    assert len(row["key_hash"]) == 32
    assert all(key not in str(value) for value in row.values())
    assert key.encode() not in bytes(row["key_hash"])
    assert await find_credential(client.app[POOL], key, timeout=5) is not None
    assert await find_credential(client.app[POOL], key + "x", timeout=5) is None


async def test_unknown_and_citizen_credentials_are_refused(client: Client, make_token: Any) -> None:
    """No credential or an unknown admin-looking key: 401 with WWW-Authenticate; a citizen's
    ID token: 403."""
    assert (await client.get("/v1/admin/audit")).status == 401
    unknown = await client.get("/v1/admin/audit", headers=auth("pa_" + "x" * 43))
    assert unknown.status == 401
    assert unknown.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/v1/admin/audit", headers=auth(make_token()))).status == 403


async def test_every_admin_action_is_audited_with_who_what_and_rows(client: Client) -> None:
    """Creating and revoking a terminal, an override, a replay count and a refused attempt each
    leave one entry: actor (credential name and id, never the key), action, outcome, target
    without the user id, rows."""
    operator = await role_headers(client, "operator", name="gate-team")
    officer = await role_headers(client, "health_officer", name="dr-li")
    made = await client.post("/v1/admin/terminals", json={"place": "Audit Gate"}, headers=operator)
    terminal_id = (await made.json())["id"]
    await client.post(f"/v1/admin/terminals/{terminal_id}/revoke", headers=operator)
    override = {"user_id": "110101199003071234", "color": "red", "reason": "positive_test"}
    await client.post("/v1/admin/overrides", json=override, headers=officer)
    await client.get("/v1/admin/replays", headers=officer)
    await client.post("/v1/admin/overrides", json=override, headers=operator)  # refused

    rows = [r for r in await audit_rows(client) if r["actor"].startswith(("gate-team", "dr-li"))]
    actions = [(r["actor"].split(" ")[0], r["action"], r["outcome"]) for r in rows]
    assert actions == [
        ("gate-team", "terminal.add", "ok"),
        ("gate-team", "terminal.revoke", "ok"),
        ("dr-li", "override.add", "ok"),
        ("dr-li", "replays.count", "ok"),
        ("gate-team", "override.add", "denied"),
    ]
    assert terminal_id in rows[0]["target"]
    assert "Audit Gate" in rows[0]["target"]
    assert rows[0]["rows"] == 1
    for row in rows:
        assert "110101199003071234" not in row["target"]
        assert "pa_" not in row["actor"]


async def test_the_auditor_reads_the_log_in_pages_and_the_read_is_recorded(
    client: Client,
) -> None:
    """Pages of ``limit`` entries, oldest first, chained by next_cursor without gaps or repeats;
    filters by action; each read is itself an entry (audit.read, rows returned)."""
    operator = await role_headers(client, "operator", name="pager")
    auditor = await role_headers(client, "auditor", name="auditor-1")
    for n in range(5):
        await client.post("/v1/admin/terminals", json={"place": f"P{n}"}, headers=operator)
    seen: list[int] = []
    cursor = 0
    while True:
        page = await client.get(
            f"/v1/admin/audit?action=terminal.add&limit=2&cursor={cursor}", headers=auditor
        )
        assert page.status == 200
        body = await page.json()
        seen += [e["id"] for e in body["entries"]]
        assert all(e["action"] == "terminal.add" for e in body["entries"])
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) >= 5
    reads = [r for r in await audit_rows(client) if r["action"] == "audit.read"]
    assert reads
    assert reads[-1]["actor"].startswith("auditor-1")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=-1",
        "since=yesterday",
        "action=DROP%20TABLE",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "until=0001-01-01T00:00:00Z",
        "since=9999-12-31T23:59:59-01:00",
        "actor=%00",
        "actor=a%0Ab",
    ],
)
async def test_bad_audit_queries_are_400_problems(client: Client, query: str) -> None:
    """Every query parameter is checked; a bad one is a 400 problem body, never a 500."""
    response = await client.get(f"/v1/admin/audit?{query}", headers=ADMIN)
    assert response.status == 400, await response.text()
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "query",
    ["since=9999-12-31T20:00:00Z", "until=0001-01-01T00:00:00Z", "since=1969-12-31T00:00:00Z"],
)
async def test_replay_counts_refuse_times_out_of_range(client: Client, query: str) -> None:
    """Times whose window arithmetic would overflow are a 400, never a 500."""
    response = await client.get(f"/v1/admin/replays?{query}", headers=ADMIN)
    assert response.status == 400, await response.text()


async def test_the_audit_log_refuses_update_delete_and_truncate(client: Client) -> None:
    """Append-only in the database itself: UPDATE, DELETE and TRUNCATE raise, rows stay."""
    await client.post("/v1/admin/terminals", json={"place": "Immutable"}, headers=ADMIN)
    before = await audit_rows(client)
    async with client.app[POOL].acquire() as conn:
        for sql in (
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    assert await audit_rows(client) == before
