"""The pages' sign-in module (passcode/web/common/auth.js), run by Node's test runner
(tests/oidc/auth.test.mjs) against this service in dev mode on real PostgreSQL and Redis: the
code flow with PKCE through the dev identity provider's login form, the answer's state, issuer
and code checked, the token kept out of every URL, expiry and sign-out."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import Client

NODE_TEST = Path(__file__).resolve().parents[1] / "oidc" / "auth.test.mjs"
NODE_DEADLINE = 120.0


async def test_auth_js_signs_in_through_the_dev_provider(client: Client) -> None:
    """Every Node test passes and none is skipped."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the pages' sign-in module is run by Node 20")
    env = {**os.environ, "PASSCODE_BASE_URL": str(client.make_url("/"))}
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
    assert counts["pass"] == counts["tests"] >= 9, report
