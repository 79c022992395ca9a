"""A bounded in-process map whose entries carry their own expiry time.

Used to remember work that stays true until a known moment: an authenticated pass (until it
expires), a verified ID token (until its ``exp``), a pass already signed for a status version.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """At most ``max_entries``; a full map first drops expired entries, then its oldest half."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, *, now: float) -> V | None:
        """The value while ``now`` is not past its expiry; an expired entry is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now > entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, *, expires_at: float, now: float) -> None:
        if self.max_entries <= 0 or now > expires_at:
            self._entries.pop(key, None)  # never keep an older value under this key
            return
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._evict(now)
        self._entries[key] = (expires_at, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def _evict(self, now: float) -> None:
        live = {k: entry for k, entry in self._entries.items() if entry[0] >= now}
        half = self.max_entries // 2
        if len(live) > half:
            live = dict(list(live.items())[len(live) - half :])
        self._entries = live
