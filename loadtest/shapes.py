"""Load shapes: a morning rush, and a staircase that finds the knee.

The locustfile puts only the shape chosen by ``LOCUST_SHAPE`` (``rush``, ``step`` or ``none``)
into its namespace, because Locust runs any shape class it finds there. Sizes and durations come
from ``LOADTEST_*`` environment variables (seconds and users), read when the run starts.
"""

from __future__ import annotations

import logging

from locust import LoadTestShape

from loadtest.scenarios import env_float, env_int

log = logging.getLogger("loadtest")

Tick = tuple[int, float] | None


class RushShape(LoadTestShape):
    """The morning rush at the gates: quiet, a ramp to the peak, a hold, the fall, then stop.

    ``LOADTEST_PEAK_USERS`` (500), ``LOADTEST_BASE_USERS`` (a tenth of the peak),
    ``LOADTEST_WARM`` (30 s at the base), ``LOADTEST_RAMP`` (60 s), ``LOADTEST_HOLD`` (120 s),
    ``LOADTEST_FALL`` (60 s). The ramp is linear: users are added at (peak - base) / ramp per
    second, and taken away at (peak - base) / fall.
    """

    def __init__(self) -> None:
        super().__init__()
        self.peak = env_int("LOADTEST_PEAK_USERS", 500)
        self.base = min(self.peak, env_int("LOADTEST_BASE_USERS", max(1, self.peak // 10)))
        self.warm = env_float("LOADTEST_WARM", 30)
        self.ramp = max(1.0, env_float("LOADTEST_RAMP", 60))
        self.hold = env_float("LOADTEST_HOLD", 120)
        self.fall = max(1.0, env_float("LOADTEST_FALL", 60))

    def tick(self) -> Tick:
        t = self.get_run_time()
        rise = max(1.0, (self.peak - self.base) / self.ramp)
        if t < self.warm:
            return self.base, float(max(1, self.base))  # the quiet before: up within a second
        t -= self.warm
        if t < self.ramp + self.hold:
            return self.peak, rise
        t -= self.ramp + self.hold
        if t < self.fall:
            return self.base, max(1.0, (self.peak - self.base) / self.fall)
        return None


class StepShape(LoadTestShape):
    """A staircase: ``LOADTEST_STEP_USERS`` (50) more users every ``LOADTEST_STEP_TIME`` (30 s)
    up to ``LOADTEST_MAX_USERS`` (1000), then stop. The knee is where throughput stops growing
    with users while latency climbs; the report finds it in the stats history and marks it.

    Stops early, at a step boundary, once the last window's failure ratio exceeds
    ``LOADTEST_STEP_STOP_FAIL_RATIO`` (0.05) or, when set, its p99 exceeds
    ``LOADTEST_STEP_STOP_P99_MS``: past the knee there is nothing more to learn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.step_users = max(1, env_int("LOADTEST_STEP_USERS", 50))
        self.step_time = max(5.0, env_float("LOADTEST_STEP_TIME", 30))
        self.max_users = max(self.step_users, env_int("LOADTEST_MAX_USERS", 1000))
        self.stop_fail_ratio = env_float("LOADTEST_STEP_STOP_FAIL_RATIO", 0.05)
        self.stop_p99_ms = env_float("LOADTEST_STEP_STOP_P99_MS", 0.0)
        self._step = -1
        self._stopped = False

    def _past_the_knee(self) -> bool:
        if self.runner is None:
            return False
        total = self.runner.stats.total
        rps = total.current_rps
        if rps <= 0:
            return False
        fail_ratio = total.current_fail_per_sec / rps
        p99 = total.get_current_response_time_percentile(0.99) or 0
        if fail_ratio > self.stop_fail_ratio:
            log.warning("step shape: stopping, failure ratio %.3f in the last window", fail_ratio)
            return True
        if self.stop_p99_ms and p99 > self.stop_p99_ms:
            log.warning("step shape: stopping, p99 %.0f ms in the last window", p99)
            return True
        return False

    def tick(self) -> Tick:
        if self._stopped:
            return None
        step = int(self.get_run_time() // self.step_time)
        users = (step + 1) * self.step_users
        if users > self.max_users:
            return None
        if step != self._step:
            if self._step >= 0 and self._past_the_knee():
                self._stopped = True
                return None
            self._step = step
        return users, float(self.step_users)  # each step reached within a second
