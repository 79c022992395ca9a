"""Remembers codes already authenticated, so a pass scanned again skips the signature check.

Verifying Ed25519 costs more than the rest of a verify put together, and at the doors a pass is
often scanned more than once within its minute (metro in and out, a mall, an office). Only the
*authentication* is remembered, keyed by the exact code text: the time window, the signing key
still being published and the live status are checked on every scan. A code that differs by one
character is a different key, so a tampered code is never a hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from passcode.domain.expiring import ExpiringCache
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
        self._cache: ExpiringCache[str, Authenticated] = ExpiringCache(max_entries)

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, code: str, *, now: int | None = None) -> Authenticated | None:
        """The entry for ``code``; with ``now``, only while the pass has not expired."""
        return self._cache.get(code, now=float("-inf") if now is None else now)

    def put(self, code: str, found: Authenticated, *, now: int) -> None:
        expires_at = found.claims.expires_at + self.leeway
        self._cache.put(code, found, expires_at=expires_at, now=now)
