"""The verify script's decision is the domain's: for stored versions × times × pass versions,
the Lua script on a real Redis answers with the status exactly when
:func:`passcode.domain.status.decides` says the stored copy may decide."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from passcode.config import Settings
from passcode.domain.model import Color
from passcode.domain.status import LiveStatus, decides
from passcode.store.cache import Cache
from passcode.wiring import open_cache

BASE = 1_780_000_000  # a Unix second in 2026


@pytest.fixture
def loop_and_cache(settings: Settings) -> Iterator[tuple[asyncio.AbstractEventLoop, Cache]]:
    """A loop of the test's own, driven by hand: hypothesis runs each example synchronously."""
    loop = asyncio.new_event_loop()

    async def make() -> Cache:
        return open_cache(settings)

    cache = loop.run_until_complete(make())
    try:
        yield loop, cache
    finally:
        loop.run_until_complete(cache.close())
        loop.close()


async def scan(cache: Cache, subject: bytes, *, now: int, pass_version: int) -> LiveStatus | None:
    return await cache.verify_and_record(
        subject,
        now=now,
        pass_version=pass_version,
        scan_id=str(uuid.uuid4()),
        record="{}",
        token_id=os.urandom(8),
        place="Gate P",
    )


def test_the_verify_script_decides_as_the_domain_rule(
    loop_and_cache: tuple[asyncio.AbstractEventLoop, Cache],
) -> None:
    """Around the boundaries (``valid_until`` a few seconds either side of now, the pass a
    few versions either side of the stored one, versions small and large): the script
    returns the stored status exactly when ``decides`` holds, and nil otherwise."""
    loop, cache = loop_and_cache

    @hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
    @given(
        version=st.one_of(st.integers(1, 5), st.integers(1, 2**52)),
        pass_delta=st.integers(-3, 3),
        now=st.integers(BASE - 10**6, BASE + 10**6),
        until_delta=st.integers(-3, 3),
        color=st.sampled_from([None, *Color]),
    )
    def check(
        version: int, pass_delta: int, now: int, until_delta: int, color: Color | None
    ) -> None:
        stored = LiveStatus(color, version, now + until_delta, "张*三")
        pass_version = max(0, version + pass_delta)
        subject = os.urandom(16)

        async def run() -> LiveStatus | None:
            await cache.put_status(subject, stored)
            return await scan(cache, subject, now=now, pass_version=pass_version)

        answer = loop.run_until_complete(run())
        expected = stored if decides(stored, now=now, pass_version=pass_version) else None
        assert answer == expected

    check()


async def test_the_verify_script_has_no_answer_for_a_subject_it_does_not_hold(
    settings: Settings,
) -> None:
    """No stored status: nil (verify goes to PostgreSQL), whatever the pass."""
    cache = open_cache(settings)
    try:
        assert await scan(cache, os.urandom(16), now=BASE, pass_version=0) is None
    finally:
        await cache.close()
