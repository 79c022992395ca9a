"""Remembers codes already authenticated, so a pass scanned again skips the signature check.

Verifying Ed25519 costs more than the rest of a verify put together, and at the doors a pass is
often scanned more than once within its minute (metro in and out, a mall, an office). Only the
*authentication* is remembered, keyed by the exact code text: the time window, the signing key
still being published and the live status are checked on every scan. A code that differs by one
character is a different key, so a tampered code is never a hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from passcode.domain.passfmt import PassClaims


@dataclass(frozen=True, slots=True)
class Authenticated:
    claims: PassClaims
    kid: bytes


class AuthenticatedPasses:
    """A bounded map from code text to its authenticated claims; entries leave at expiry."""

    def __init__(self, max_entries: int, *, leeway: int) -> None:
        self.max_entries = max_entries
        self.leeway = leeway
        self._entries: dict[str, Authenticated] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, code: str) -> Authenticated | None:
        return self._entries.get(code)

    def put(self, code: str, found: Authenticated, *, now: int) -> None:
        if self.max_entries <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[code] = found

    def _evict(self, now: int) -> None:
        """Drop expired entries; if that frees too little, drop the oldest half."""
        live = {
            code: entry
            for code, entry in self._entries.items()
            if entry.claims.expires_at + self.leeway >= now
        }
        if len(live) > self.max_entries // 2:
            keep = list(live.items())[len(live) - self.max_entries // 2 :]
            live = dict(keep)
        self._entries = live
