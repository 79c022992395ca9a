"""Scan-log drain: Redis Stream shards → day-partitioned Postgres table, in batches.

Entries are acknowledged (and deleted from the stream) only after the Postgres transaction that
stored them committed, so a crash at any point re-delivers rather than loses. The insert is
idempotent, so a re-delivery is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import ResponseError

from passcode.errors import StoreUnavailable
from passcode.store.cache import DRAIN_GROUP, Cache, redis_errors
from passcode.store.pg import Pool
from passcode.store.scans import decode_entry, insert_scans
from passcode.store.statuses import sync_unsynced

log = logging.getLogger(__name__)

# (entry id, fields); fields are None for an entry deleted after it was delivered.
Entry = tuple[bytes, dict[bytes, bytes] | None]


class ScanDrain:
    def __init__(
        self,
        pool: Pool,
        cache: Cache,
        *,
        consumer: str,
        batch: int,
        interval: float,
        pg_timeout: float,
        dedupe_window: int,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.consumer = consumer
        self.batch = batch
        self.interval = interval
        self.pg_timeout = pg_timeout
        self.claim_idle_ms = claim_idle_ms
        self.dedupe_window = dedupe_window
        self.stored = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current batch and return."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def ensure_groups(self) -> None:
        client = self.cache.client
        for stream in self.cache.stream_keys():
            with redis_errors("create consumer group"):
                try:
                    await client.xgroup_create(stream, DRAIN_GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def _take(self, stream: str) -> list[Entry]:
        """Our own un-acked entries first, then ones a dead consumer left idle, then new ones."""
        client = self.cache.client
        with redis_errors("read scans"):
            async with asyncio.timeout(self.cache.timeout * 4):
                mine: Any = await client.xreadgroup(
                    DRAIN_GROUP, self.consumer, {stream: "0"}, count=self.batch
                )
                entries: list[Entry] = list(mine[0][1]) if mine else []
                if not entries:
                    claimed: Any = await client.xautoclaim(
                        stream, DRAIN_GROUP, self.consumer, self.claim_idle_ms, "0-0",
                        count=self.batch,
                    )  # fmt: skip
                    entries = list(claimed[1])
                if not entries:
                    fresh: Any = await client.xreadgroup(
                        DRAIN_GROUP, self.consumer, {stream: ">"}, count=self.batch
                    )
                    entries = list(fresh[0][1]) if fresh else []
        return entries

    async def drain_stream(self, stream: str) -> int:
        entries = await self._take(stream)
        if not entries:
            return 0
        rows = []
        for entry_id, fields in entries:
            if not fields:  # deleted after delivery: nothing left to store, only to acknowledge
                continue
            try:
                rows.append(decode_entry(fields))
            except ValueError:
                log.error("dropping unreadable scan entry %s on %s", entry_id.decode(), stream)
        await insert_scans(
            self.pool, rows, timeout=self.pg_timeout * 5, dedupe_window=self.dedupe_window
        )
        ids = [entry_id for entry_id, _ in entries]
        client = self.cache.client
        with redis_errors("ack scans"):
            async with asyncio.timeout(self.cache.timeout * 4):
                pipe = client.pipeline(transaction=False)
                pipe.xack(stream, DRAIN_GROUP, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()
        self.stored += len(rows)
        return len(entries)

    async def drain_once(self) -> int:
        """One pass over every shard; returns how many entries were stored and acknowledged."""
        total = 0
        for stream in self.cache.stream_keys():
            total += await self.drain_stream(stream)
        return total

    async def drain_all(self) -> int:
        """Drain until the streams are empty (shutdown flush, tests)."""
        total = 0
        while moved := await self.drain_once():
            total += moved
        return total

    async def run(self) -> None:
        """Until stopped: drain, repair unsynced statuses now and then, back off while down."""
        if not await self._until_ready():
            return
        idle_rounds = 0
        while not self._stopping.is_set():
            try:
                moved = await self.drain_once()
                idle_rounds = 0 if moved else idle_rounds + 1
                if idle_rounds % 25 == 1:
                    await sync_unsynced(self.pool, self.cache, limit=500, timeout=self.pg_timeout)
            except StoreUnavailable:
                moved = 0
                await self._pause(1.0)
            if not moved:
                await self._pause(self.interval)

    async def _until_ready(self) -> bool:
        while not self._stopping.is_set():
            try:
                await self.ensure_groups()
                return True
            except StoreUnavailable:
                await self._pause(1.0)
        return False
