"""The real ``passcode`` command line, run as a subprocess against the test's servers and data
folder, and its effects seen through an app built from the same settings."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import time
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.passfmt import verify_pass
from passcode.keys import DRAIN, KEYRING, POOL
from passcode.testing import HEALTHY, auth
from tests.helpers import TokenFactory, cli, ok


async def add_terminal(settings: Settings, place: str) -> tuple[uuid.UUID, str]:
    out = ok(await cli(settings, "terminal", "add", "--place", place))
    found = re.search(r"^terminal ([0-9a-f-]{36}) at ", out, re.MULTILINE)
    key = re.search(r"^key \(shown once[^)]*\): (\S+)$", out, re.MULTILINE)
    assert found is not None, out
    assert key is not None, out
    return uuid.UUID(found.group(1)), key.group(1)


async def green_pass(client: TestClient[Any, Any], token: str) -> str:
    declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
    assert declared.status == 201, await declared.text()
    got = await client.get("/v1/pass", headers=auth(token))
    assert got.status == 200, await got.text()
    code: str = (await got.json())["code"]
    return code


def subject_of(client: TestClient[Any, Any], code: str) -> bytes:
    now = int(time.time())
    keys = client.app[KEYRING].verification_keys(now)
    return verify_pass(code, keys, now=now, leeway=30).subject


async def verify(client: TestClient[Any, Any], terminal_key: str, code: str) -> Any:
    return await client.post("/v1/verify", json={"code": code}, headers=auth(terminal_key))


async def test_dev_token_is_accepted_by_the_app(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """`passcode dev-token <user> --name 张小三` prints a JWT that the app, sharing the data
    folder, accepts as that citizen; the pass shows only the masked name."""
    user_id = f"cli-{uuid.uuid4().hex[:12]}"
    out = ok(await cli(settings, "dev-token", user_id, "--name", "张小三"))
    token = out.strip()
    assert token.count(".") == 2
    assert "\n" not in token
    code = await green_pass(client, token)
    view = await (await client.get("/v1/pass", headers=auth(token))).json()
    assert view["holder"] == {"name": "张*三"}
    assert code.startswith("PC1:")

    # Another token for the same user id is the same citizen (the same subject in the pass);
    # a token for another user id is not, and has no pass until it declares.
    again = ok(await cli(settings, "dev-token", user_id, "--name", "张小三", "--ttl", "600"))
    other = await (await client.get("/v1/pass", headers=auth(again.strip()))).json()
    assert subject_of(client, other["code"]) == subject_of(client, code)
    stranger = ok(await cli(settings, "dev-token", user_id + "-b", "--name", "张小三")).strip()
    assert (await client.get("/v1/pass", headers=auth(stranger))).status == 404


async def test_dev_token_needs_dev_mode(settings: Settings) -> None:
    """Outside dev mode the CLI refuses to mint identity tokens (exit 2, nothing printed)."""
    result = await cli(settings, "dev-token", "someone", "--name", "A B", PASSCODE_DEV_MODE="0")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "PASSCODE_DEV_MODE" in result.stderr


async def test_terminal_add_prints_a_key_stored_only_as_its_hash(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory
) -> None:
    """`terminal add` prints the key once; the database keeps only its SHA-256, never the key;
    the key then authenticates verify calls, and scans are recorded at the CLI-given place. The
    audit log names it (actor ``cli:<login>``), written in the terminal's own transaction."""
    terminal_id, key = await add_terminal(settings, "Library Gate 3")
    audited = await client.app[POOL].fetchrow(
        "SELECT a.actor, a.xmin::text = t.xmin::text AS together FROM audit_log a, terminals t"
        " WHERE a.action = 'terminal.add' AND a.target ->> 'terminal_id' = $1 AND t.id = $2",
        str(terminal_id),
        terminal_id,
    )  # xmin, a system column: the transaction that wrote the row
    assert audited is not None
    assert audited["actor"].startswith("cli:")
    assert audited["together"]
    row = await client.app[POOL].fetchrow(
        "SELECT place, key_hash, t::text AS everything FROM terminals t WHERE id = $1", terminal_id
    )
    assert row is not None
    assert row["place"] == "Library Gate 3"
    assert row["key_hash"] == hashlib.sha256(key.encode()).digest()
    assert key not in row["everything"]
    secret_part = key.removeprefix("pt_")
    assert secret_part not in row["everything"]
    raw = base64.urlsafe_b64decode(secret_part + "=" * (-len(secret_part) % 4))
    assert raw.hex() not in row["everything"]

    code = await green_pass(client, make_token())
    result = await verify(client, key, code)
    assert result.status == 200, await result.text()
    assert (await result.json())["decision"] == "admit"
    await client.app[DRAIN].drain_all()
    places = await client.app[POOL].fetch(
        "SELECT place FROM scans WHERE terminal_id = $1", terminal_id
    )
    assert [r["place"] for r in places] == ["Library Gate 3"]


async def test_terminal_revoke_makes_its_key_forbidden(
    aiohttp_client: Any, settings: Settings, make_token: TokenFactory
) -> None:
    """`terminal revoke <id>` in another process takes effect on the app (terminal cache off):
    the next verify with that key is a 403 terminal-revoked problem; an unknown id exits 1 and a
    malformed id exits 2."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(dataclasses.replace(settings, terminal_cache_ttl=0))
    )
    terminal_id, key = await add_terminal(settings, "Clinic Door")
    code = await green_pass(client, make_token())
    before = await verify(client, key, code)
    assert before.status == 200, await before.text()

    assert ok(await cli(settings, "terminal", "revoke", str(terminal_id))).strip() == "revoked"
    after = await verify(client, key, code)
    assert after.status == 403, await after.text()
    assert after.content_type == "application/problem+json"
    assert (await after.json())["type"].endswith("/terminal-revoked")
    # Revoking twice is harmless.
    assert ok(await cli(settings, "terminal", "revoke", str(terminal_id))).strip() == "revoked"

    unknown = await cli(settings, "terminal", "revoke", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert unknown.stdout.strip() == "no such terminal"
    malformed = await cli(settings, "terminal", "revoke", "not-a-uuid")
    assert malformed.returncode == 2
    assert "Traceback" not in malformed.stderr


async def test_override_red_denies_a_pass_issued_green(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory, terminal_key: str
) -> None:
    """`override <user> red --reason positive_test` from the CLI reaches the running app's live
    status (Postgres and the Redis hot copy under the same prefix): the green pass in hand, which
    was admitted a moment before, is now denied as red."""
    user_id = f"cli-override-{uuid.uuid4().hex[:12]}"
    code = await green_pass(client, make_token(user_id))
    first = await verify(client, terminal_key, code)
    assert (await first.json())["decision"] == "admit"

    out = ok(await cli(settings, "override", user_id, "red", "--reason", "positive_test"))
    assert "status now red" in out

    result = await (await verify(client, terminal_key, code)).json()
    assert result["decision"] == "deny"
    assert result["color"] == "red"
    assert result["reason"] in {"status_red", "superseded"}
    view = await (await client.get("/v1/pass", headers=auth(make_token(user_id)))).json()
    assert view["color"] == "red"


async def test_keys_rotate_prints_the_new_kid_and_the_app_publishes_it(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory
) -> None:
    """`keys list` shows the app's signing key; `keys rotate` prints a new kid that is listed as
    upcoming, written to the app's key folder, published by /v1/keys after a reload, and not yet
    used to sign."""
    holder = client.app[KEYRING]
    current = holder.signer(int(time.time())).kid.hex()
    listed = ok(await cli(settings, "keys", "list")).splitlines()
    assert len(listed) == 1
    assert listed[0].startswith(current)
    assert listed[0].endswith("signing")

    out = ok(await cli(settings, "keys", "rotate"))
    found = re.search(r"^added key ([0-9a-f]{16}): published now, signs from ", out, re.MULTILINE)
    assert found is not None, out
    new_kid = found.group(1)
    assert new_kid != current

    lines = {line.split()[0]: line for line in ok(await cli(settings, "keys", "list")).splitlines()}
    assert set(lines) == {current, new_kid}
    assert lines[current].endswith("signing")
    assert lines[new_kid].endswith("upcoming")
    assert any(new_kid in p.name for p in (settings.key_dir / "signing").glob("*.json"))

    assert holder.reload_if_changed() is True
    keys = (await (await client.get("/v1/keys")).json())["keys"]
    published = {base64.urlsafe_b64decode(k["kid"] + "=").hex() for k in keys}
    assert published == {current, new_kid}
    # Passes are still signed by the old key: it alone verifies them.
    now = int(time.time())
    old_only = {
        kid: key
        for kid, key in holder.verification_keys(now).items()
        if kid == bytes.fromhex(current)
    }
    code = await green_pass(client, make_token())
    assert verify_pass(code, old_only, now=now, leeway=30).color.value == "green"


async def test_admin_key_add_list_revoke_through_the_cli(
    aiohttp_client: Any, settings: Settings
) -> None:
    """`passcode admin-key add` prints a key once that the service accepts for exactly its roles;
    `list` shows names and roles, never keys; `revoke` makes the key unknown; a bad role is a
    usage error."""
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    out = ok(
        await cli(settings, "admin-key", "add", "--name", "Dr Wang", "--role", "health_officer")
    )
    credential = re.search(r"^admin credential ([0-9a-f-]{36}) ", out, re.MULTILINE)
    key = re.search(r"^key \(shown once\): (pa_\S+)$", out, re.MULTILINE)
    assert credential is not None, out
    assert key is not None, out
    headers = auth(key.group(1))
    assert (await client.get("/v1/admin/replays", headers=headers)).status == 200
    assert (await client.get("/v1/admin/audit", headers=headers)).status == 403
    listed = ok(await cli(settings, "admin-key", "list"))
    assert credential.group(1) in listed
    assert "health_officer" in listed
    assert key.group(1) not in listed
    ok(await cli(settings, "admin-key", "revoke", credential.group(1)))
    assert (await client.get("/v1/admin/replays", headers=headers)).status == 401
    audited = await client.app[POOL].fetch(
        "SELECT actor, action FROM audit_log WHERE target ->> 'credential_id' = $1 ORDER BY id",
        credential.group(1),
    )
    assert [(r["actor"][:4], r["action"]) for r in audited] == [
        ("cli:", "admin_key.add"),
        ("cli:", "admin_key.revoke"),
    ]
    bad = await cli(settings, "admin-key", "add", "--name", "x", "--role", "superuser")
    assert bad.returncode == 2
