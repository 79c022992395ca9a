"""Key rotation under load (issue 4): rotating the signing key while verifies run causes zero
failed verifies — passes signed by the old key and by the new one are all admitted."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.app import create_app
from passcode.config import Settings
from passcode.domain.passfmt import authenticate_pass
from passcode.keys import KEYRING
from passcode.store.keyring import rotate
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

WORKERS = 8
CITIZENS = 16
RUN_SECONDS = 2.0
MAX_VERIFIES = 3000  # a bound on the work, whatever the machine's speed


async def test_rotating_the_signing_key_mid_run_fails_no_verify(
    aiohttp_client: ClientFactory, settings: Settings, make_token: TokenFactory
) -> None:
    """~2 s of concurrent fetch-then-verify (8 workers, 16 citizens); halfway, a new key with an
    activation in the past (and after the old key's) is added and the running service reloads it. Every verify
    of a fresh pass, and of a pass kept from before the switch, is 200 admit; passes signed by
    both keys were verified, and the new key signed from the switch on."""
    client = await aiohttp_client(
        # Not about overload: no lag-based shedding, which a stall of a shared machine can trip.
        create_app(
            dataclasses.replace(settings, terminal_rate=1e6, terminal_burst=1e6, shed_issue_lag=0.0)
        )
    )
    created = await client.post("/v1/admin/terminals", json={"place": "Gate R"}, headers=ADMIN)
    assert created.status == 201, await created.text()
    terminal = auth((await created.json())["key"])
    tokens = [make_token() for _ in range(CITIZENS)]
    for token in tokens:
        declared = await client.post("/v1/declarations", json=HEALTHY, headers=auth(token))
        assert declared.status == 201, await declared.text()

    holder = client.app[KEYRING]
    old_kid = holder.signer(int(time.time())).kid
    kept: list[str] = []  # passes fetched before the switch, verified again after it
    failures: list[tuple[int, Any]] = []
    verified_kids: dict[bytes, int] = {}
    switched = asyncio.Event()
    count = 0
    deadline = time.monotonic() + RUN_SECONDS

    async def check(code: str) -> None:
        nonlocal count
        count += 1
        response = await client.post("/v1/verify", json={"code": code}, headers=terminal)
        body = await response.json(content_type=None)
        if response.status != 200 or body.get("decision") != "admit":
            failures.append((response.status, body))
            return
        now = int(time.time())
        _, kid = authenticate_pass(code, holder.verification_keys(now), issuer=settings.issuer)
        verified_kids[kid] = verified_kids.get(kid, 0) + 1

    async def worker(index: int) -> None:
        turn = index
        while time.monotonic() < deadline and count < MAX_VERIFIES:
            token = tokens[turn % CITIZENS]
            turn += WORKERS
            got = await client.get("/v1/pass", headers=auth(token))
            if got.status != 200:
                failures.append((got.status, await got.text()))
                continue
            code = (await got.json())["code"]
            if not switched.is_set():
                kept.append(code)
            await check(code)
            if switched.is_set() and kept:
                await check(kept.pop())

    async def switch() -> None:
        await asyncio.sleep(RUN_SECONDS / 2)
        lead = settings.key_publish_lead
        now = int(time.time())  # a second or more after start-up: the old key is older
        activates = max(now - 1, holder.signer(now).activates_at + 1)
        rotate(settings.key_dir, now=activates - lead, publish_lead=lead)
        assert holder.reload_if_changed()
        switched.set()

    await asyncio.gather(switch(), *(worker(i) for i in range(WORKERS)))
    for code in kept:  # whatever the workers did not get to
        await check(code)

    assert failures == [], failures[:5]
    new_kid = holder.signer(int(time.time())).kid
    assert new_kid != old_kid
    assert verified_kids.get(old_kid, 0) > 0, verified_kids
    assert verified_kids.get(new_kid, 0) > 0, verified_kids
    assert set(verified_kids) == {old_kid, new_kid}
