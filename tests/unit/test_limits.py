"""The rate limiter's leases and its fallback (passcode/service/limits.py), against an in-memory
fake of the Cache's rate-limit calls (tests/helpers.py: FakeRateLimits), no Redis.

A verify asks for a lease of units in one GCRA call; the units are charged at once (the limit
stays global) and spent here without asking again, also while the answer is still awaited; a
tight limit leases one unit at a time and refuses from what it knows, without a call; with Redis
down the in-process buckets keep the limit, starting from the units already spent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from passcode.errors import RateLimited
from passcode.service.limits import Limiter
from tests.helpers import FakeClock, FakeRateLimits

SLOW = 0.01  # one unit per 100 s: nothing refills while a test runs


def limiter(store: FakeRateLimits, *, burst: float) -> Limiter:
    fake: Any = store  # the fake stands in for the Cache's rate-limit calls
    return Limiter(fake, kind="t", rate=SLOW, burst=burst, what="terminal")


async def test_one_call_leases_units_that_requests_spend_while_its_answer_is_awaited() -> None:
    """Burst 1000: the first verify asks for a lease of 50 units in one call; the next 49 in the
    same turn spend it ahead with no call of their own; the 51st asks for the next lease."""
    store = FakeRateLimits()
    limits = limiter(store, burst=1000)
    assert limits.lease_units == 50
    key = limits.key(b"\x00" * 16, "terminal-1")
    assert all(limits.speculate(key) for _ in range(50))
    assert store.calls == [50]
    assert limits.speculate(key)
    assert store.calls == [50, 50]
    await store.answer()


async def test_a_granted_lease_is_charged_at_once_and_its_rest_spent_without_asking() -> None:
    """The lease's 50 units are charged in the store when it is granted (its TAT moves 50
    intervals); after the answer, the 49 units left serve 49 verifies with no call; the next
    verify asks for a new lease."""
    store = FakeRateLimits()
    limits = limiter(store, burst=1000)
    key = limits.key(b"\x00" * 16, "terminal-2")
    asked_at_ms = time.time() * 1000
    assert limits.speculate(key)
    await store.answer()
    interval_ms = 1000 / SLOW
    charged = store.tat[key]
    assert charged == pytest.approx(asked_at_ms + 50 * interval_ms, abs=1000)
    assert all(limits.speculate(key) for _ in range(49))
    assert store.calls == [50]
    assert store.tat[key] == charged  # spending the lease touched nothing in the store
    assert limits.speculate(key)
    assert store.calls == [50, 50]
    await store.answer()
    assert store.tat[key] == pytest.approx(charged + 50 * interval_ms, abs=1000)


async def test_a_tight_limit_leases_one_unit_and_refuses_from_what_it_knows() -> None:
    """Burst 2: one unit per call; two verifies pass, the third is refused with Retry-After from
    the TAT the answers carried, without another call."""
    store = FakeRateLimits()
    limits = limiter(store, burst=2)
    assert limits.lease_units == 1
    key = limits.key(b"\x00" * 16, "terminal-3")
    for _ in range(2):
        assert limits.speculate(key)
        await store.answer()
    with pytest.raises(RateLimited) as refused:
        limits.speculate(key)
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert store.calls == [1, 1]


async def test_with_redis_down_the_process_buckets_hold_the_limit_from_what_was_spent() -> None:
    """Burst 2: the first verify's call fails (Redis down); its unit is charged to the in-process
    buckets, so the next verify goes to check() (speculate says False), which passes on the
    buckets without a call, and the one after is refused."""
    store = FakeRateLimits()
    limits = limiter(store, burst=2)
    key = limits.key(b"\x00" * 16, "terminal-4")
    assert limits.speculate(key)
    store.down = True
    await store.answer()
    assert limits.speculate(key) is False
    await limits.check(key)
    with pytest.raises(RateLimited):
        await limits.check(key)
    assert store.calls == [1]


async def test_the_limit_is_kept_in_the_injected_clocks_time() -> None:
    """The TATs the limiter sends (and every replica shares through Redis) are the service's
    clock's milliseconds: a clock set a year ahead charges a year ahead."""
    store = FakeRateLimits()
    fake: Any = store
    clock = FakeClock(time.time() + 365 * 86_400)
    limits = Limiter(fake, kind="t", rate=SLOW, burst=1000, what="terminal", clock=clock)
    key = limits.key(b"\x00" * 16, "terminal-clock")
    assert limits.speculate(key)
    await store.answer()
    assert store.tat[key] == pytest.approx(clock.at * 1000 + 50 * 1000 / SLOW, abs=1)
