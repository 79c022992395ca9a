"""Issue 11: the supervisor every background task runs under (no I/O: tasks are coroutines)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from passcode.workers.supervisor import (  # private: the backoff rule, without real restarts
    FAILING,
    RESTARTING,
    RUNNING,
    Supervisor,
    _Watch,
)

LOGGER = "passcode.workers.supervisor"


class Flaky:
    """Fails its first ``failures`` runs (with the same error), then runs until told to end."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.running = asyncio.Event()
        self.end = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise OverflowError("date value out of range")
        self.running.set()
        await self.end.wait()


def fast(**overrides: float) -> Supervisor:
    settings: dict[str, float] = {"first_delay": 0.001, "max_delay": 0.004, "healthy_run": 3600}
    settings.update(overrides)
    return Supervisor(
        first_delay=settings["first_delay"],
        max_delay=settings["max_delay"],
        failing_after=3,
        healthy_run=settings["healthy_run"],
    )


async def test_a_task_that_raises_is_restarted_and_logged_once_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task failing five times alike, then running: it is restarted each time; the first
    failure is one ERROR record with the cause's traceback, the four repeats one WARNING line
    each without a traceback; the task runs on and ends when its work returns."""
    supervisor = fast()
    work = Flaky(failures=5)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        task = supervisor.start("scan-drain", work)
        await asyncio.wait_for(work.running.wait(), timeout=10)
    assert work.runs == 6
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], OverflowError)
    assert "scan-drain" in errors[0].getMessage()
    repeats = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(repeats) == 4
    assert all(r.exc_info is None for r in repeats)
    assert "OverflowError" in repeats[-1].getMessage()
    work.end.set()
    await asyncio.wait_for(task, timeout=10)
    assert supervisor.health() == {}  # a task whose work returned is done and forgotten


async def test_a_different_error_is_logged_at_error_again(caplog: pytest.LogCaptureFixture) -> None:
    """Alike failures are one ERROR; a failure of another kind is an ERROR of its own."""
    supervisor = fast()
    errors = [ValueError("a"), ValueError("a"), KeyError("b")]
    done = asyncio.Event()

    async def run() -> None:
        if errors:
            raise errors.pop(0)
        done.set()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        supervisor.start("retention", run)
        await asyncio.wait_for(done.wait(), timeout=10)
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING, logging.ERROR]


def test_the_backoff_doubles_and_is_capped() -> None:
    """Delays before restarts: 1, 2, 4, 8 … seconds, never above the cap, even after a very
    long streak (no overflow)."""
    supervisor = Supervisor(first_delay=1.0, max_delay=10.0)
    watch = _Watch("x")
    delays = [supervisor._failed(watch, RuntimeError("boom")) for _ in range(2000)]
    assert delays[:7] == [1, 2, 4, 8, 10, 10, 10]
    assert max(delays) == 10


async def test_health_says_restarting_then_failing_and_recovers_after_a_healthy_run() -> None:
    """A task failing in a row is ``restarting`` below three failures, ``failing`` from the
    third (what /readyz reports), and ``running`` with no failures again once a run lasted
    ``healthy_run``."""
    supervisor = fast(first_delay=0.001, max_delay=0.001, healthy_run=0.2)
    gate, fourth = asyncio.Event(), asyncio.Event()
    states: list[str] = []

    async def run() -> None:
        states.append(supervisor.health()["key-reload"]["state"])
        if len(states) <= 3:
            raise OSError("keys unreadable")
        fourth.set()
        await gate.wait()

    task = supervisor.start("key-reload", run)
    await asyncio.wait_for(fourth.wait(), timeout=10)
    health = supervisor.health()["key-reload"]
    assert states == [RUNNING, RUNNING, RUNNING, FAILING]
    assert (health["state"], health["failures"], health["last_error"]) == (FAILING, 3, "OSError")
    assert supervisor.failing() == ["key-reload"]
    async with asyncio.timeout(10):
        while True:
            if supervisor.health()["key-reload"]["state"] == RUNNING:
                break
            await asyncio.sleep(0.01)
    assert supervisor.health()["key-reload"]["failures"] == 0
    assert supervisor.health()["key-reload"]["restarts"] == 3
    gate.set()
    await task


async def test_a_restarting_task_is_reported_while_it_waits() -> None:
    """Between a failure and its restart the task is ``restarting``, its error class named."""
    supervisor = Supervisor(first_delay=3600, failing_after=3)
    failed = asyncio.Event()

    async def run() -> None:
        failed.set()
        raise ZeroDivisionError

    task = supervisor.start("status-sync", run)
    await failed.wait()
    await asyncio.sleep(0)
    health = supervisor.health()["status-sync"]
    assert (health["state"], health["failures"], health["last_error"]) == (
        RESTARTING,
        1,
        "ZeroDivisionError",
    )
    supervisor.retire(task)  # a retired task waits out no backoff
    await asyncio.wait_for(task, timeout=10)


async def test_cancelling_a_supervised_task_stops_it_for_good() -> None:
    """Shutdown: a cancelled task is not restarted, in its run or in its backoff; close()
    cancels all of them."""
    supervisor = fast(first_delay=3600, max_delay=3600)
    work = Flaky(failures=0)
    task = supervisor.start("scan-drain", work)
    await asyncio.wait_for(work.running.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert work.runs == 1

    backing_off = supervisor.start("retention", Flaky(failures=100))
    await asyncio.sleep(0.01)
    running = supervisor.start("key-reload", Flaky(failures=0))
    await asyncio.sleep(0)
    await supervisor.close(timeout=10)
    assert backing_off.cancelled()
    assert running.cancelled()
    assert supervisor.health() == {}


async def test_two_tasks_of_one_name_are_both_reported() -> None:
    """Risk-place jobs of one marking started twice: both show, the second as ``#2``."""
    supervisor = fast()
    first, second = Flaky(0), Flaky(0)
    tasks = [supervisor.start("job", first), supervisor.start("job", second)]
    await asyncio.sleep(0)
    assert set(supervisor.health()) == {"job", "job#2"}
    first.end.set()
    second.end.set()
    await asyncio.wait(tasks)
