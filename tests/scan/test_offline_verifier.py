"""The scanner page's offline verifier (passcode/web/scan/offline.js), run by Node's test runner
against passes this service really signs: the test mints them on a running app (real PostgreSQL
and Redis), writes them with the app's ``GET /v1/keys`` to a file and runs
``tests/scan/offline_verifier.test.mjs`` on it. Node also sends a queue of offline scans to the
app's ``POST /v1/verify/batch`` (an answer lost, then sent again), and this test checks that the
scan log holds each of them once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.domain.passfmt import PREFIX, b45decode, b45encode, kid_of, sign_pass
from passcode.keys import DRAIN, POOL
from passcode.store.pg import acquire
from passcode.store.scans import count_scans
from passcode.testing import FEVER, auth
from tests.helpers import (
    Client,
    TokenFactory,
    citizen_pass,
    claims_for,
    service_signed,
    verify_ok,
)

NODE_TEST = Path(__file__).with_name("offline_verifier.test.mjs")
NODE_DEADLINE = 120.0  # s: the run takes about one


def _flip(text: str, at: int) -> str:
    """``text`` with the byte at ``at`` of its COSE message flipped (negative: from the end)."""
    raw = bytearray(b45decode(text[len(PREFIX) :]))
    raw[at] ^= 0x01
    return PREFIX + b45encode(bytes(raw))


async def _vectors(client: Client, make_token: TokenFactory, key: str) -> dict[str, object]:
    genuine = await citizen_pass(client, make_token)
    yellow = await citizen_pass(client, make_token, FEVER)
    keys = await (await client.get("/v1/keys")).json()
    before = time.time()
    answer = await verify_ok(client, key, genuine)
    after = time.time()
    now = int(time.time())
    stranger = Ed25519PrivateKey.generate()
    fresh = claims_for(client, issued_at=now, expires_at=now + 60)
    return {
        "keys": keys,
        "genuine": genuine,
        "yellow": yellow,
        # byte 20 is inside the payload (after D2 84 4D <13-byte header> A0 58 <len>)
        "tampered_payload": _flip(genuine, 20),
        "tampered_signature": _flip(genuine, -1),
        "unknown_kid": sign_pass(fresh, stranger, kid_of(stranger.public_key())),
        "expired": service_signed(
            client, claims_for(client, issued_at=now - 600, expires_at=now - 540)
        ),
        "card": service_signed(
            client,
            dataclasses.replace(fresh, expires_at=now + 86400 * 180, card=os.urandom(16)),
        ),
        "server_time": answer["server_time"],
        "device_now_ms": (before + after) / 2 * 1000,
        "base_url": str(client.make_url("/")),
        "terminal_key": key,
    }


async def _stored_once(client: Client, scan_ids: list[str]) -> dict[str, int]:
    await client.app[DRAIN].drain_all()
    async with acquire(client.app[POOL], "read", 5) as conn:
        rows = await conn.fetch(
            "SELECT scan_id, count(*) AS n FROM scans WHERE scan_id = ANY($1::uuid[])"
            " GROUP BY scan_id",
            [uuid.UUID(s) for s in scan_ids],
        )
    return {str(r["scan_id"]): r["n"] for r in rows}


async def test_offline_verifier_in_node_against_passes_the_service_signs(
    client: Client, make_token: TokenFactory, terminal_key: str, tmp_path: Path
) -> None:
    """Every Node test passes and none is skipped: genuine passes verify (green admit, yellow
    deny), a tampered byte is bad_signature, a stranger's kid unknown_key, an expired pass and
    a fresh one on a clock whose server offset says it is past are expired, a card is not
    admitted offline; the queued scans reach the service and are recorded once each."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the scanner page's offline verifier needs Node 20")
    vectors = await _vectors(client, make_token, terminal_key)
    vectors["out_file"] = str(tmp_path / "sent.json")
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    env = {**os.environ, "PASSCODE_SCAN_VECTORS": str(tmp_path / "vectors.json")}
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-reporter=tap",
        str(NODE_TEST),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), NODE_DEADLINE)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = out.decode()
    assert process.returncode == 0, report
    counts = {
        k: int(v) for k, v in re.findall(r"^# (tests|pass|fail|skipped) (\d+)$", report, re.M)
    }
    assert counts["fail"] == 0, report
    assert counts["skipped"] == 0, report
    assert counts["pass"] == counts["tests"] >= 15, report

    sent = json.loads((tmp_path / "sent.json").read_text())["scan_ids"]
    assert await _stored_once(client, sent) == dict.fromkeys(sent, 1)


async def test_the_key_probe_records_nothing_and_tells_unknown_keys_apart(
    client: Client, terminal_key: str
) -> None:
    """The scanner page checks a typed key with an empty batch: a known key gets the schema's
    400 (after the credential was checked), an unknown one 401; neither is a scan."""
    await client.app[DRAIN].drain_all()
    before = await count_scans(client.app[POOL], timeout=5)
    good = await client.post("/v1/verify/batch", json={"scans": []}, headers=auth(terminal_key))
    assert good.status == 400
    bad = await client.post("/v1/verify/batch", json={"scans": []}, headers=auth("no-such-key"))
    assert bad.status == 401
    await client.app[DRAIN].drain_all()
    assert await count_scans(client.app[POOL], timeout=5) == before
