"""Overload protection: when the process is saturated, refuse fast (503 + Retry-After).

Requests are counted while in flight, per process, in two classes (the route table,
:mod:`passcode.api.routes`, gives each route its class or none; the api's problems wrapper
admits each request of a class here):

* **issuance** (the pass and declaration routes) is shed first: when the requests in flight of
  both classes together reach ``shed_issue_inflight``, or the event loop runs
  ``shed_issue_lag`` seconds late;
* **verify** (single and batch) only when they reach the higher ``shed_verify_inflight``.

So a gate keeps scanning while the pass endpoints back off, and a refused request costs a
comparison instead of waiting behind the queue. Routes of no class are never shed. Loop lag is
measured by a periodic task (sleep ``shed_lag_interval``, see how late it wakes up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from passcode.errors import Overloaded

ISSUE = 0
VERIFY = 1


class LoadShedder:
    def __init__(
        self,
        *,
        issue_inflight: int,
        verify_inflight: int,
        issue_lag: float,
        lag_interval: float,
        retry_after: int,
    ) -> None:
        self.limits = (issue_inflight, verify_inflight)
        self.issue_lag = issue_lag
        self.lag_interval = lag_interval
        self.retry_after = retry_after
        self.in_flight = 0
        self.lag = 0.0
        self.shed = [0, 0]  # requests refused, per class

    def admit(self, kind: int) -> None:
        """Raise :class:`Overloaded` when a request of this class must be refused now."""
        if self.in_flight >= self.limits[kind] or (
            kind == ISSUE and self.issue_lag > 0 and self.lag >= self.issue_lag
        ):
            self.shed[kind] += 1
            what = "pass issuance" if kind == ISSUE else "verification"
            raise Overloaded(
                f"the service is saturated; {what} is shed", retry_after=self.retry_after
            )

    async def watch_lag(self, app: object) -> AsyncIterator[None]:
        """A cleanup context (of any app: ``app`` is unused): measure how late the event loop
        wakes up, while the app runs."""
        if self.issue_lag <= 0:
            yield
            return

        async def watch() -> None:
            interval = self.lag_interval
            while True:
                started = time.monotonic()
                await asyncio.sleep(interval)
                self.lag = max(0.0, time.monotonic() - started - interval)

        task = asyncio.create_task(watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
