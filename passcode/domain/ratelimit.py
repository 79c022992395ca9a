"""A token bucket per key, in process: bursts allowed, a steady rate enforced.

Pure (the caller passes the clock) so it is testable without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBuckets:
    rate: float  # tokens per second
    burst: float
    max_keys: int = 100_000
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 when allowed; otherwise the seconds to wait before ``cost`` tokens are there."""
        tokens, at = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= cost:
            if len(self._state) >= self.max_keys and key not in self._state:
                self._state.clear()
            self._state[key] = (tokens - cost, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (cost - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a ``Retry-After`` header, at least 1."""
        return max(1, math.ceil(wait))
