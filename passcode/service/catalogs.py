"""Keeps every replica's in-process catalogs (trust store, place policies, revoked cards) in
step with PostgreSQL: a loop reads the catalogs' versions (one small query) every
``interval`` seconds and reloads each catalog whose version moved, so a change made on any
replica reaches every replica within about ``interval`` seconds. The replica that made a change
reloads at once (:meth:`CatalogWatcher.changed`).

While PostgreSQL is down the replicas keep what they last loaded, and catch up when it returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from passcode.errors import StoreUnavailable
from passcode.store import catalogs
from passcode.store.catalogs import Catalog
from passcode.store.pg import Pool

log = logging.getLogger(__name__)

Reload = Callable[[], Awaitable[None]]

INTERVAL = 1.0  # s between version reads: a change reaches every replica within about this


class CatalogWatcher:
    """Reloads registered catalogs when their version in PostgreSQL changes."""

    def __init__(self, pool: Pool, *, timeout: float, interval: float = INTERVAL) -> None:
        self.pool = pool
        self.timeout = timeout
        self.interval = interval
        self._reloads: dict[Catalog, Reload] = {}
        self._seen: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def register(self, catalog: Catalog, reload: Reload) -> None:
        """``reload`` loads the catalog whole from PostgreSQL (and raises StoreUnavailable or
        TimeoutError when it cannot); it runs at start-up and on every change."""
        self._reloads[catalog] = reload

    async def load_all(self) -> None:
        """Every catalog, once (start-up): a replica serves nothing it has not loaded."""
        async with self._lock:
            self._seen = await catalogs.versions(self.pool, timeout=self.timeout)
            for reload in self._reloads.values():
                await reload()

    async def changed(self, catalog: Catalog) -> None:
        """This replica just changed ``catalog``: reload it now, not at the next poll."""
        reload = self._reloads.get(catalog)
        if reload is not None:
            async with self._lock:
                await reload()

    async def poll_once(self) -> list[Catalog]:
        """Reload the catalogs whose version moved since the last read; which were."""
        async with self._lock:
            now = await catalogs.versions(self.pool, timeout=self.timeout)
            moved = [c for c in self._reloads if now.get(c.value, 0) != self._seen.get(c.value, 0)]
            for catalog in moved:
                await self._reloads[catalog]()
            self._seen = now
        return moved

    async def run(self) -> None:
        """Poll for ever (a supervised background task)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                moved = await self.poll_once()
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("catalog versions unreadable, keeping the loaded ones: %s", exc)
                continue
            if moved:
                log.info("catalogs reloaded: %s", ", ".join(c.value for c in moved))
