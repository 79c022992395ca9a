"""Every admin action's audit entry commits in the transaction of its effect (issue 12).

A row's ``xmin`` is the id of the transaction that wrote it (inserted or last updated): an
effect and its audit entry written in one transaction carry the same one. The tests reach that
PostgreSQL system column for exactly that reason.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.domain.model import Role
from passcode.keys import POOL
from passcode.service import access
from passcode.store import deadletters
from passcode.store.deadletters import DeadLetter
from tests.helpers import ADMIN, role_headers

Client = TestClient[Any, Any]


async def audit_xmin(client: Client, action: str, key: str, value: str) -> str:
    """The writing transaction of the last ``action`` entry whose target has ``key: value``."""
    async with client.app[POOL].acquire() as conn:
        found: str = await conn.fetchval(
            "SELECT xmin::text FROM audit_log WHERE action = $1 AND target ->> $2 = $3"
            " ORDER BY id DESC LIMIT 1",
            action,
            key,
            value,
        )
    assert found is not None, (action, key, value)
    return found


async def test_adding_a_terminal_commits_with_its_audit_entry(client: Client) -> None:
    """terminal.add: the terminal row and its audit entry are written by one transaction, so
    no terminal exists that the audit log does not name."""
    operator = await role_headers(client, "operator", name="txn-add")
    made = await client.post("/v1/admin/terminals", json={"place": "Txn Gate"}, headers=operator)
    assert made.status == 201
    terminal_id = (await made.json())["id"]
    async with client.app[POOL].acquire() as conn:
        written = await conn.fetchval(
            "SELECT xmin::text FROM terminals WHERE id = $1", uuid.UUID(terminal_id)
        )
    assert written == await audit_xmin(client, "terminal.add", "terminal_id", terminal_id)


async def test_revoking_a_terminal_commits_with_its_audit_entry(client: Client) -> None:
    """terminal.revoke: the revocation and its audit entry are written by one transaction."""
    operator = await role_headers(client, "operator", name="txn-revoke")
    made = await client.post("/v1/admin/terminals", json={"place": "Txn Exit"}, headers=operator)
    terminal_id = (await made.json())["id"]
    revoked = await client.post(f"/v1/admin/terminals/{terminal_id}/revoke", headers=operator)
    assert revoked.status == 204
    async with client.app[POOL].acquire() as conn:
        written = await conn.fetchval(
            "SELECT xmin::text FROM terminals WHERE id = $1 AND revoked_at IS NOT NULL",
            uuid.UUID(terminal_id),
        )
    assert written == await audit_xmin(client, "terminal.revoke", "terminal_id", terminal_id)


async def test_adding_and_revoking_an_admin_credential_commit_with_their_audit_entries(
    client: Client,
) -> None:
    """admin_key.add and admin_key.revoke (what ``passcode admin-key`` runs): each change and
    its audit entry are written by one transaction; the entry names the credential and its
    roles, never its key; revoking an unknown credential records nothing."""
    pool = client.app[POOL]
    made, key = await access.add_credential(
        pool, "txn-cred", frozenset({Role.AUDITOR}), actor="cli:tester", timeout=5
    )
    async with pool.acquire() as conn:
        added = await conn.fetchval(
            "SELECT xmin::text FROM admin_credentials WHERE id = $1", made.id
        )
    assert added == await audit_xmin(client, "admin_key.add", "credential_id", str(made.id))
    assert await access.revoke_credential(pool, made.id, actor="cli:tester", timeout=5)
    async with pool.acquire() as conn:
        revoked = await conn.fetchval(
            "SELECT xmin::text FROM admin_credentials WHERE id = $1 AND revoked_at IS NOT NULL",
            made.id,
        )
        entries = await conn.fetch(
            "SELECT actor, target::text AS target FROM audit_log"
            " WHERE target ->> 'credential_id' = $1",
            str(made.id),
        )
    assert revoked == await audit_xmin(client, "admin_key.revoke", "credential_id", str(made.id))
    assert [e["actor"] for e in entries] == ["cli:tester", "cli:tester"]
    assert all(key not in e["target"] for e in entries)
    assert "auditor" in entries[0]["target"]
    unknown = uuid.uuid4()
    assert not await access.revoke_credential(pool, unknown, actor="cli:tester", timeout=5)
    async with pool.acquire() as conn:
        assert not await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE target ->> 'credential_id' = $1", str(unknown)
        )


async def test_a_dead_letter_replay_commits_each_page_with_its_audit_entry(
    client: Client,
) -> None:
    """dead_letters.replay: the transaction that settles a page of dead letters (forgets those
    now stored, notes why the rest still fail) also writes that page's audit entry, so no
    dead letter leaves or changes unaudited however a replay ends."""
    stream = f"txn-{uuid.uuid4().hex}"
    letter = DeadLetter(stream, "1-0", (b"r", b"not a scan"), "unreadable")
    await deadletters.add(client.app[POOL], [letter], timeout=5)
    replayed = await client.post("/v1/admin/dead-letters/replay", headers=ADMIN)
    assert replayed.status == 200, await replayed.text()
    async with client.app[POOL].acquire() as conn:
        settled = await conn.fetchval(
            "SELECT xmin::text FROM scan_dead_letters WHERE stream = $1 AND last_tried IS NOT NULL",
            stream,
        )
        entries = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'dead_letters.replay'"
            " AND xmin::text = $1",
            settled,
        )
    assert settled is not None
    assert entries == 1
