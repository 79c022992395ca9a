"""One supervisor for every background task: a task that raises is logged and restarted.

A background task (the scan drain, the status sync, retention, risk-place jobs, the signing-key
reload) that ends with an unexpected exception would otherwise end silently, its exception
seen only at shutdown, if ever. Under :class:`Supervisor` the failure is logged at ERROR with
its traceback (once per streak of alike failures; repeats are one WARNING line each), and the
task starts again after an exponential backoff (capped). A task failing
:data:`FAILING_AFTER` times in a row, with no run lasting :data:`HEALTHY_RUN` seconds between,
is ``failing`` until a run lasts that long: ``GET /readyz`` shows it. A task that returns is done and forgotten; one
cancelled (shutdown) stays cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0  # s before the first restart; doubled on each failure in a row
MAX_DELAY = 60.0
FAILING_AFTER = 3  # failures in a row after which /readyz reports the task
HEALTHY_RUN = 60.0  # s a run must last for its failure to start a new streak

RUNNING, RESTARTING, FAILING = "running", "restarting", "failing"


@dataclass(slots=True)
class _Watch:
    """One supervised task's record."""

    name: str
    state: str = RUNNING
    failures: int = 0  # in a row
    restarts: int = 0  # in all
    last_error: str | None = None  # the exception's class only: no message leaves the log
    previous: tuple[str, str] | None = None  # the last failure's class and message
    retired: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Starts tasks, restarts those that raise, and reports on them (``health``)."""

    def __init__(
        self,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        failing_after: int = FAILING_AFTER,
        healthy_run: float = HEALTHY_RUN,
    ) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failing_after = failing_after
        self.healthy_run = healthy_run
        self._watches: dict[asyncio.Task[None], _Watch] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``run()`` in the background, again after each unexpected exception."""
        watch = _Watch(name)
        task = asyncio.create_task(self._keep(watch, run), name=name)
        self._watches[task] = watch
        task.add_done_callback(self._forget)
        return task

    def retire(self, task: asyncio.Task[None]) -> None:
        """No restart after the current run (which the task's owner asks to stop); a backoff in
        progress ends at once."""
        watch = self._watches.get(task)
        if watch is not None:
            watch.retired.set()

    async def close(self, *, timeout: float) -> None:
        """Cancel every task still supervised and wait (bounded) for them to end."""
        tasks = list(self._watches)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each task's state, failures in a row, restarts and last error class, by name (a
        second task of one name gets ``#2``)."""
        found: dict[str, dict[str, Any]] = {}
        for watch in self._watches.values():
            name, n = watch.name, 1
            while name in found:
                n += 1
                name = f"{watch.name}#{n}"
            found[name] = {
                "state": watch.state,
                "failures": watch.failures,
                "restarts": watch.restarts,
                "last_error": watch.last_error,
            }
        return found

    def failing(self) -> list[str]:
        """The names of tasks that keep failing."""
        return [name for name, h in self.health().items() if h["state"] == FAILING]

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._watches.pop(task, None)

    async def _keep(self, watch: _Watch, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            recovered = loop.call_later(self.healthy_run, self._recovered, watch)
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a background task outlives any one failure
                delay = self._failed(watch, exc)
            finally:
                recovered.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.retired.wait(), timeout=delay)
            if watch.retired.is_set():
                return
            if watch.state == RESTARTING:
                watch.state = RUNNING

    @staticmethod
    def _recovered(watch: _Watch) -> None:
        """A run lasted ``healthy_run``: the next failure starts a new streak."""
        watch.failures, watch.previous, watch.state = 0, None, RUNNING

    def _failed(self, watch: _Watch, exc: Exception) -> float:
        """Count and log one failure; returns the delay before the restart."""
        watch.failures += 1
        watch.restarts += 1
        watch.last_error = type(exc).__name__
        watch.state = FAILING if watch.failures >= self.failing_after else RESTARTING
        delay: float = min(self.first_delay * 2.0 ** min(watch.failures - 1, 30), self.max_delay)
        seen = (watch.last_error, str(exc))
        if seen == watch.previous:
            log.warning(
                "background task %s failed again (%d in a row, %s); restarting in %.1f s",
                watch.name,
                watch.failures,
                watch.last_error,
                delay,
            )
        else:
            log.error(
                "background task %s failed; restarting in %.1f s", watch.name, delay, exc_info=exc
            )
        watch.previous = seen
        return delay
