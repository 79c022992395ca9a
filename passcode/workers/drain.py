"""Scan-log drain: Redis Stream shards → day-partitioned Postgres table, in batches.

Reading the next shard overlaps storing the previous one, and a batch is stored by two
transactions at once (split by advisory-lock bucket): ``loadtest/drain_bench.py`` measures it.

Entries are acknowledged (and deleted from the stream) only after the Postgres transaction that
stored them committed, so a crash at any point re-delivers rather than loses. The insert is
idempotent, so a re-delivery is stored once.

No one entry stops the drain: an entry it cannot read, or whose values PostgreSQL or asyncpg
refuse (found by splitting the batch, :func:`~passcode.store.scans.insert_isolating`), is kept
in ``scan_dead_letters`` with the reason, and only then acknowledged; the rest of its batch is
stored as usual. Kept nowhere (Postgres down), it stays pending and comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from passcode.errors import StoreUnavailable
from passcode.metrics import DRAIN_DEAD, DRAIN_STORED
from passcode.service.status import sync_unsynced
from passcode.store import deadletters, scanstream
from passcode.store.cache import Cache
from passcode.store.deadletters import DeadLetter
from passcode.store.pg import Pool
from passcode.store.scans import (
    SCAN_LOCK_BUCKETS,
    UNSTORABLE,
    ScanRecord,
    decode_entry,
    insert_isolating,
    insert_records,
    lock_bucket,
    unstorable_reason,
)

log = logging.getLogger(__name__)

DECODE_SLICE = 1000  # entries decoded between yields to the event loop (verify shares it)
SPLIT_MIN = 2000  # rows below which one transaction stores a batch (no gain in splitting)
SYNC_EVERY = 25  # drain intervals between two repairs of statuses whose Redis write failed


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries taken from one shard: every id to acknowledge, the rows to store first, and
    the entries that could not be read (to keep as dead letters before acknowledging)."""

    stream: str
    ids: list[bytes]
    records: list[ScanRecord]
    entries: Sequence[
        scanstream.Entry
    ] = ()  # as taken: the rare failed insert maps rows back to them
    unreadable: list[DeadLetter] = field(default_factory=list)


def _dead(stream: str, entry_id: bytes, fields: Sequence[bytes], reason: str) -> DeadLetter:
    return DeadLetter(stream, entry_id.decode(), tuple(fields), reason)


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
        writers: int = 2,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.consumer = consumer
        self.batch = batch
        self.interval = interval
        self.pg_timeout = pg_timeout
        self.claim_idle_ms = claim_idle_ms
        self.dedupe_window = dedupe_window
        self.writers = max(1, min(writers, SCAN_LOCK_BUCKETS))
        self.stored = 0
        self.dead_lettered = 0  # entries kept as dead letters by this drain
        self._pass_lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current batch and return."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def ensure_groups(self) -> None:
        await scanstream.create_groups(self.cache)

    async def read(self, stream: str) -> Batch:
        """Take a batch from one shard (our own unacknowledged entries first, then ones a dead
        consumer left idle, then new ones) and decode it, yielding to the loop now and then."""
        entries = await scanstream.take(
            self.cache,
            stream,
            consumer=self.consumer,
            count=self.batch,
            claim_idle_ms=self.claim_idle_ms,
        )
        records: list[ScanRecord] = []
        unreadable: list[DeadLetter] = []
        for start in range(0, len(entries), DECODE_SLICE):
            if start:
                await asyncio.sleep(0)
            for entry_id, fields in entries[start : start + DECODE_SLICE]:
                if not fields:  # deleted after delivery: nothing left to store, only to ack
                    continue
                try:
                    records.append(decode_entry(fields))
                except ValueError as exc:
                    unreadable.append(_dead(stream, entry_id, fields, unstorable_reason(exc)))
        ids = [entry_id for entry_id, _ in entries]
        return Batch(stream, ids, records, entries, unreadable)

    async def store(self, batch: Batch) -> int:
        """Store a batch, and only once that committed, acknowledge and delete its entries;
        entries that cannot be stored are kept as dead letters first."""
        if not batch.ids:
            return 0
        dead = batch.unreadable
        try:
            await self._insert(batch.records)
        except UNSTORABLE as exc:  # some row's values: store the others, find which
            log.warning("a scan batch on %s failed (%s); storing it in parts", batch.stream, exc)
            dead = dead + await self._isolate(batch)
        if dead:
            await deadletters.add(self.pool, dead, timeout=self.pg_timeout)
            self.dead_lettered += len(dead)
            DRAIN_DEAD.inc(len(dead))
            log.warning(
                "kept %d scan entr%s of %s as dead letters (%s): passcode dead-letters list",
                len(dead),
                "y" if len(dead) == 1 else "ies",
                batch.stream,
                "; ".join(sorted({d.reason for d in dead}))[:300],
            )
        await scanstream.acknowledge(self.cache, batch.stream, batch.ids)
        stored = len(batch.records) + len(batch.unreadable) - len(dead)
        self.stored += stored
        DRAIN_STORED.inc(stored)
        return len(batch.ids)

    async def _isolate(self, batch: Batch) -> list[DeadLetter]:
        """Store what can be of a batch whose insert failed on its values; the entries whose
        rows cannot be, as dead letters. (Rows are decoded again from their entries: the
        fast path keeps no link between the two.)"""
        readable: list[tuple[bytes, Sequence[bytes], ScanRecord]] = []
        for entry_id, fields in batch.entries:
            if fields:
                with contextlib.suppress(ValueError):  # kept as unreadable already
                    readable.append((entry_id, fields, decode_entry(fields)))
        failed = await insert_isolating(
            self.pool,
            [record for _, _, record in readable],
            timeout=self.pg_timeout * 5,
            dedupe_window=self.dedupe_window,
        )
        return [
            _dead(batch.stream, readable[n][0], readable[n][1], reason)
            for n, reason in sorted(failed.items())
        ]

    async def _insert(self, records: list[ScanRecord]) -> None:
        """Insert on up to ``writers`` connections at once, split by advisory-lock bucket.

        Postgres does most of the work per row; one transaction keeps one backend busy. The
        parts hold disjoint buckets, so their transactions never wait on each other's locks
        and every copy of one scan id is in the same part (checked against each other there).
        Returns once every part committed; raises the first failure after all have ended.
        """
        if not records:
            return
        if self.writers == 1 or len(records) < SPLIT_MIN:
            parts = [records]
        else:
            parts = [[] for _ in range(self.writers)]
            for record in records:
                parts[lock_bucket(record[1]) * self.writers // SCAN_LOCK_BUCKETS].append(record)
        timeout, window = self.pg_timeout * 5, self.dedupe_window
        tasks = [
            asyncio.create_task(
                insert_records(self.pool, part, timeout=timeout, dedupe_window=window)
            )
            for part in parts
            if part
        ]
        try:
            await asyncio.wait(tasks)  # each part under its own deadlines
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            raise
        finally:
            failures = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        for failure in failures:
            if failure is not None:
                raise failure

    async def drain_stream(self, stream: str) -> int:
        """One batch of one shard, read then stored (no overlap)."""
        return await self.store(await self.read(stream))

    async def drain_once(self) -> int:
        """One pass over every shard; returns how many entries were stored and acknowledged.

        Passes of one drain never overlap: ``drain_all`` (shutdown flush, tests) waits for the
        background loop's pass in progress to commit, so when it returns nothing read before it
        is still in flight.
        """
        async with self._pass_lock:
            return await self._drain_pass()

    async def _drain_pass(self) -> int:
        """The pass itself.

        The next shard's batch is read and decoded (Redis and this process's CPU) while the
        previous one is stored (Postgres's): the two halves overlap instead of taking turns.
        Each shard is read once per pass, so a batch in flight is never read again (it is still
        pending in the group) while it is being stored.
        """
        total = 0
        storing: asyncio.Task[int] | None = None
        try:
            for stream in self.cache.stream_keys():
                batch = await self.read(stream)
                if storing is not None:
                    task, storing = storing, None
                    total += await task
                if batch.ids:
                    storing = asyncio.create_task(self.store(batch))
            if storing is not None:
                task, storing = storing, None
                total += await task
        finally:
            if storing is not None:  # a read failed, or we were cancelled: the entries of the
                storing.cancel()  # batch in flight stay pending and are delivered again
                await asyncio.wait({storing})
                if not storing.cancelled() and storing.exception() is not None:
                    log.warning("storing a scan batch failed too", exc_info=storing.exception())
        return total

    async def drain_all(self) -> int:
        """Drain until the streams are empty (shutdown flush, tests)."""
        total = 0
        while moved := await self.drain_once():
            total += moved
        return total

    async def run(self) -> None:
        """Until stopped: drain, back off while a store is down. Run it under the
        :class:`~passcode.workers.supervisor.Supervisor`: anything else it raises is a bug."""
        if not await self._until_ready():
            return
        while not self._stopping.is_set():
            try:
                moved = await self.drain_once()
            except StoreUnavailable:
                moved = 0
                await self._pause(1.0)
            if not moved:
                await self._pause(self.interval)

    async def sync_statuses(self) -> None:
        """Until stopped: now and then, push the statuses whose Redis write failed earlier (a
        task of its own, so that its failure never stops the drain)."""
        while not self._stopping.is_set():
            await self._pause(self.interval * SYNC_EVERY)
            if self._stopping.is_set():
                return
            try:
                await sync_unsynced(self.pool, self.cache, limit=500, timeout=self.pg_timeout)
            except StoreUnavailable:
                await self._pause(1.0)

    async def _until_ready(self) -> bool:
        while not self._stopping.is_set():
            try:
                await self.ensure_groups()
                return True
            except StoreUnavailable:
                await self._pause(1.0)
        return False
