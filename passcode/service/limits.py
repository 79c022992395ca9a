"""Rate limits per terminal and per citizen: GCRA in Redis, shared by every process.

One script call per check (:meth:`Cache.rate_limit_submit`), queued in the batch of the
event-loop turn, so on the verify path it shares the write of the verify script: no round trip
of its own. Two ways to use a :class:`Limiter`:

* :meth:`Limiter.check`: wait for the answer, then go on (citizens, terminal batches). Exact.
* :meth:`Limiter.speculate`: for the verify hot path. A request is answered 429 only from what
  is already known here, never after it had an effect; otherwise the GCRA call is sent in the
  same write as the verify and its answer (read before the verify's, so before the handler
  resumes) updates what is known. Each answer carries the key's theoretical arrival time (TAT),
  which only moves forward, so "the next request cannot pass before T" is known without asking:
  a terminal scanning one at a time is limited exactly. Requests sent speculatively at once
  never exceed the headroom known here; beyond it they wait for their own answer first
  (:meth:`check`, which first lets the answers already asked for come in, since calls on
  different connections may reach Redis in any order), so a flood from one terminal cannot
  outrun the limit by its concurrency in one process. What remains is a race between processes, each spending the headroom it last saw
  before it hears of the others' spending (bounded by one answer per process).

  To keep the hot path cheap, a speculative call asks for a *lease* of ``lease_units`` (a
  twentieth of the burst, at most 50; 1 for bursts under 40, which keeps tight limits exact)
  when the known headroom covers it. The units are charged in Redis at once (the limit stays
  global); the process spends the rest without asking again for at most ``lease_ttl`` seconds,
  after which unspent units are dropped. Requests arriving while a lease's answer is awaited
  spend it ahead (it was within the known headroom when asked for), and the next asks for the
  next lease. So one GCRA call serves up to ``lease_units`` verifies.

When Redis fails, the limit falls back to the in-process :class:`TokenBuckets` (limits still hold
per process) for ``down_for`` seconds before Redis is tried again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.ratelimit import TokenBuckets
from passcode.errors import RateLimited, StoreUnavailable
from passcode.metrics import RATE_LIMITED
from passcode.store.cache import Cache

log = logging.getLogger(__name__)


class Limiter:
    def __init__(
        self,
        cache: Cache,
        *,
        kind: str,
        rate: float,
        burst: float,
        what: str,
        down_for: float = 1.0,
        max_keys: int = 100_000,
        lease_max: int = 50,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.cache = cache
        # The limit's time (its TATs, shared by every replica through Redis) is the service's
        # clock; leases and the Redis-down pause are spans, measured on the monotonic clock.
        self._now = clock.now
        self.kind = kind
        self.rate = rate
        self.burst = burst
        self.what = what
        self.down_for = down_for
        self.max_keys = max_keys
        self.interval_ms = 1000.0 / rate
        self.tolerance_ms = self.interval_ms * burst
        self._interval_arg = repr(self.interval_ms)
        self._tolerance_arg = repr(self.tolerance_ms)
        self.fallback = TokenBuckets(rate=rate, burst=burst, max_keys=max_keys)
        # Speculative calls ask for a lease of units at once: a twentieth of the burst (1 for
        # small bursts, so tight limits stay exact), spent here without asking Redis again for
        # at most lease_ttl seconds; the units are charged in Redis when leased, so the limit
        # stays global, and one call serves many verifies.
        self.lease_units = max(1, min(lease_max, int(burst // 20)))
        self.lease_ttl = max(0.5, min(5.0, self.lease_units * self.interval_ms / 1000.0))
        self._leases: dict[str, tuple[int, float]] = {}  # key → (units left, until: monotonic)
        # key → [units of the lease asked for last, units already spent from it]: while a
        # lease's answer is awaited, requests of the same key spend it ahead instead of each
        # sending a call of their own; once it is spent, the next asks for another lease.
        self._lease_asked: dict[str, list[int]] = {}
        self._keys: dict[str, str] = {}  # ident → Redis key
        self._tat: dict[str, float] = {}  # key → the latest TAT seen (ms), a lower bound
        self._in_flight: dict[str, int] = {}  # key → units asked for, answer not yet in
        self._waiting: dict[str, asyncio.Event] = {}  # key → set when nothing is in flight
        self._down_until = 0.0  # monotonic: use the fallback until then
        self._limited = RATE_LIMITED.labels(what)

    def key(self, shard_key: bytes, ident: str) -> str:
        """The Redis key of ``ident`` (remembered: on the hot path it is a dict lookup)."""
        key = self._keys.get(ident)
        if key is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            key = self._keys[ident] = self.cache.rate_key(self.kind, shard_key, ident)
        return key

    def _known_wait(self, key: str, now_ms: float, cost: int) -> float:
        """Seconds before ``cost`` units could pass, from the TAT last seen; 0 if they may."""
        tat = self._tat.get(key, now_ms)
        wait_ms = max(tat, now_ms) + self.interval_ms * cost - self.tolerance_ms - now_ms
        return wait_ms / 1000.0 if wait_ms > 0 else 0.0

    def _refuse(self, wait: float) -> RateLimited:
        self._limited.inc()
        return RateLimited(
            f"this {self.what} is sending faster than its rate limit",
            retry_after=TokenBuckets.retry_after(wait),
        )

    def _remember(self, key: str, tat: float) -> None:
        if tat <= self._tat.get(key, 0.0):
            return  # an older answer arriving late
        if len(self._tat) >= self.max_keys and key not in self._tat:
            self._tat.clear()
        self._tat[key] = tat

    def _fallback_wait(self, key: str, cost: int) -> float:
        return self.fallback.take(key, time.monotonic(), cost)

    def _redis_down(self) -> bool:
        return self._down_until > 0.0 and time.monotonic() < self._down_until

    async def check(self, key: str, cost: int = 1) -> None:
        """Raise :class:`RateLimited` unless ``cost`` units may pass now (and charge them)."""
        if self._redis_down():
            wait = self._fallback_wait(key, cost)
            if wait:
                raise self._refuse(wait)
            return
        while key in self._in_flight:  # decide on the answers already asked for, in order
            await self._settled(key).wait()
        now_ms = self._now() * 1000.0
        wait = self._known_wait(key, now_ms, cost)
        if wait:
            raise self._refuse(wait)
        self._in_flight[key] = cost  # seen by speculate() and by other checks
        try:
            allowed, tat = await self.cache.rate_limit(
                key,
                now_ms=repr(now_ms),
                interval_ms=self._interval_arg,
                tolerance_ms=self._tolerance_arg,
                cost=cost,
            )
        except StoreUnavailable:
            self._down_until = time.monotonic() + self.down_for
            wait = self._fallback_wait(key, cost)
            if wait:
                raise self._refuse(wait) from None
            return
        finally:
            self._release(key, cost)
        self._remember(key, tat)
        if not allowed:
            raise self._refuse(self._known_wait(key, now_ms, cost) or 1.0)

    def speculate(self, key: str) -> bool:
        """One unit for the verify hot path; call right before the verify, in the same turn.

        Raises :class:`RateLimited` when the limit is known to be exceeded. True: a unit of a
        lease is spent, or the GCRA call (for a new lease) is queued with the verify; go on.
        False: ``await check(key)`` first instead (Redis is down, or the headroom known here does
        not cover this request on top of the units still awaiting their answer).
        """
        lease = self._leases.get(key)
        if lease is not None:
            left, until = lease
            if time.monotonic() < until:
                if left > 1:
                    self._leases[key] = (left - 1, until)
                else:
                    del self._leases[key]
                return True
            del self._leases[key]
        asked = self._lease_asked.get(key)
        if asked is not None and asked[1] < asked[0]:
            asked[1] += 1
            return True
        now_ms = self._now() * 1000.0
        pending = self._in_flight.get(key, 0)
        base = max(self._tat.get(key, now_ms), now_ms) - self.tolerance_ms - now_ms
        cost = self.lease_units
        if base + self.interval_ms * (pending + cost) > 0:
            cost = 1
            wait_ms = base + self.interval_ms * (pending + 1)
            if wait_ms > 0:
                if pending == 0:
                    raise self._refuse(wait_ms / 1000.0)
                return False
        if self._down_until and self._redis_down():
            return False
        self._in_flight[key] = pending + cost
        asking: list[int] | None = None
        if cost > 1:
            asking = self._lease_asked[key] = [cost, 1]  # this request spends the first unit
        future = self.cache.rate_limit_submit(
            key,
            now_ms=repr(now_ms),
            interval_ms=self._interval_arg,
            tolerance_ms=self._tolerance_arg,
            cost=cost,
        )
        future.add_done_callback(functools.partial(self._settle, key, cost, asking))
        return True

    def _settle(
        self, key: str, cost: int, asking: list[int] | None, future: asyncio.Future[Any]
    ) -> None:
        """Learn from a speculative answer; the request it belongs to is served regardless (a
        refusal here is a race with another process), and what is left of a granted lease is
        kept. The units spent ahead were within the headroom known when it was asked for."""
        spent = cost
        if asking is not None:
            spent = asking[1]
            if self._lease_asked.get(key) is asking:
                del self._lease_asked[key]
        try:
            allowed, tat = self.cache.rate_limit_result(future)
        except StoreUnavailable:
            self._down_until = time.monotonic() + self.down_for
            self._fallback_wait(key, spent)  # charge them: the fallback starts from the truth
        else:
            self._remember(key, tat)
            if allowed and cost > 1:
                if len(self._leases) >= self.max_keys and key not in self._leases:
                    self._leases.clear()
                left = self._leases.get(key, (0, 0.0))[0] + cost - spent
                if left > 0:
                    self._leases[key] = (left, time.monotonic() + self.lease_ttl)
        finally:
            self._release(key, cost)

    def _settled(self, key: str) -> asyncio.Event:
        event = self._waiting.get(key)
        if event is None:
            event = self._waiting[key] = asyncio.Event()
        return event

    def _release(self, key: str, cost: int) -> None:
        left = self._in_flight.pop(key) - cost
        if left:
            self._in_flight[key] = left
            return
        event = self._waiting.pop(key, None)
        if event is not None:
            event.set()
