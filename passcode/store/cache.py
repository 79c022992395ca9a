"""Redis: the hot copy of every subject's status, and the sharded scan stream.

The key layout and the scripts, on :mod:`passcode.store.transport` (which alone speaks
redis-py); the stream's reading side is :mod:`passcode.store.scanstream`.

Key layout (DESIGN §6): every key one operation touches together carries the same hash tag,
the subject's shard, so the verify script stays legal on Redis Cluster::

    {prefix}:{<shard>}:st:<subject hex>    hash: c colour ("" = none), v version,
                                            u valid-until (unix s), n masked name
    {prefix}:{<shard>}:scans               stream of scan records
    {prefix}:{<shard>}:sid:<scan id>       marks a scan id already recorded (retry safety)
    {prefix}:{<shard>}:rp:<token id hex>   the place a pass was last scanned at (replay
                                            window; shard of the pass's subject)
    {prefix}:{<shard>}:rl:t:<terminal id>  GCRA rate limit of a terminal (string: TAT, ms)
    {prefix}:{<shard>}:rl:c:<user hash>    GCRA rate limit of a citizen (hex user hash)

A rate-limit key is alone in its script call; its shard is that of the terminal id's or the
user hash's bytes, so the keys spread over the cluster like the statuses do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from passcode.domain.status import LiveStatus
from passcode.errors import StoreUnavailable
from passcode.store.transport import (
    NoScriptError,
    RedisError,
    RedisTransport,
    Script,
    redis_errors,
)

log = logging.getLogger(__name__)

# KEYS: status, stream, dedupe, last place.  ARGV: now (s), pass version, dedupe ttl, scan
# record, place, replay window (s).
# Reads the live status and, when it may decide (passcode.domain.status.decides, spelled in
# Lua: the property test in tests/integration/test_status_script.py holds the two to one
# answer), appends the scan with a snapshot of that status in the same round trip. Returns nil when the caller must go to
# Postgres (missing, expired, or older than the pass), without appending anything; else the
# status fields and a fifth, the replay flag ('1' or '0'). Replay: the pass's last place is kept
# for the window; a scan at another place within it is flagged ('rp' in the entry, added only
# then), never refused. A retried scan id changes nothing and is not flagged again.
_VERIFY_LUA = """
local st = redis.call('HMGET', KEYS[1], 'c', 'v', 'u', 'n')
if not st[2] then return nil end
if tonumber(st[3]) <= tonumber(ARGV[1]) or tonumber(ARGV[2]) > tonumber(st[2]) then
  return nil
end
st[5] = '0'
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  local prev = redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6], 'GET')
  if prev and prev ~= ARGV[5] then
    st[5] = '1'
    redis.call('XADD', KEYS[2], '*', 'sc', st[1], 'sv', st[2], 'r', ARGV[4], 'rp', '1')
  else
    redis.call('XADD', KEYS[2], '*', 'sc', st[1], 'sv', st[2], 'r', ARGV[4])
  end
end
return st
"""

# KEYS: stream, dedupe.  ARGV: dedupe ttl, scan record.  Appends once per scan id.
_APPEND_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[2])
  return 1
end
return 0
"""

# KEYS: status.  ARGV: version, colour, valid-until, masked name.  Never moves a version back.
_PUT_STATUS_LUA = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', ARGV[2], 'u', ARGV[3], 'n', ARGV[4])
return 1
"""


# KEYS: limit.  ARGV: now (ms), emission interval (ms per unit), tolerance (ms, burst ×
# interval), cost (units).  GCRA: the key holds the theoretical arrival time (TAT). Returns
# {1, new TAT} when allowed (and stores it), {0, TAT} when not (nothing written); the TAT comes
# back as a string (Lua numbers would be truncated to integers), so the caller can tell when the
# next request could pass without asking again.
_GCRA_LUA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local new = tat + interval * tonumber(ARGV[4])
if new - tonumber(ARGV[3]) > now then
  return {0, string.format('%.3f', tat)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
return {1, string.format('%.3f', new)}
"""


class LayoutMismatchError(RuntimeError):
    """The configured key layout differs from the one the data in Redis was written with."""


class Cache:
    """Status cache and scan stream over one Redis transport, every call under a deadline."""

    def __init__(
        self,
        transport: RedisTransport,
        *,
        prefix: str,
        shards: int,
        timeout: float,
        dedupe_ttl: int,
        replay_window: int = 300,
    ) -> None:
        self.transport = transport
        self.client = transport.client  # redis-py's, for tests and tools that look into Redis
        self.prefix = prefix
        self.shards = shards
        self.timeout = timeout
        self.dedupe_ttl = dedupe_ttl
        self.replay_window = max(1, replay_window)  # EX 0 is an error in Redis
        self._tags = [f"{prefix}:{{{shard}}}" for shard in range(shards)]
        self._verify = Script(_VERIFY_LUA, transport)
        self._append = Script(_APPEND_LUA, transport)
        self._put_status = Script(_PUT_STATUS_LUA, transport)
        self._gcra = Script(_GCRA_LUA, transport)

    def shard_of(self, key: bytes) -> int:
        """Subjects and scan ids are random, so their first bytes spread evenly."""
        return int.from_bytes(key[:4], "big") % self.shards

    def _tag(self, shard: int) -> str:
        """The hash-tagged start of every key of one shard (see the module docstring)."""
        return self._tags[shard]

    def status_key(self, subject: bytes) -> str:
        return f"{self._tag(self.shard_of(subject))}:st:{subject.hex()}"

    def stream_key(self, shard: int) -> str:
        return f"{self._tag(shard)}:scans"

    def dedupe_key(self, shard: int, scan_id: str) -> str:
        return f"{self._tag(shard)}:sid:{scan_id}"

    def replay_key(self, shard: int, token_id: bytes) -> str:
        return f"{self._tag(shard)}:rp:{token_id.hex()}"

    def rate_key(self, kind: str, shard_key: bytes, ident: str) -> str:
        """A rate-limit key: ``kind`` is ``t`` (terminal) or ``c`` (citizen)."""
        return f"{self._tag(self.shard_of(shard_key))}:rl:{kind}:{ident}"

    def rate_limit_submit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> asyncio.Future[Any]:
        """Queue one GCRA call in this event-loop turn's batch and return its raw reply.

        It rides in the same write as whatever else is submitted in this turn (the verify
        script), so a limit costs no round trip of its own. Read the reply with
        :meth:`rate_limit_result`. Numbers are passed as text (``repr`` of floats).
        """
        return self._gcra.submit(key, now_ms, interval_ms, tolerance_ms, cost)

    def rate_limit_result(self, future: asyncio.Future[Any]) -> tuple[bool, float]:
        """(allowed, TAT in ms) from a finished :meth:`rate_limit_submit`, or
        :class:`StoreUnavailable`. After NOSCRIPT the script is loaded again for the next call."""
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            if isinstance(error, NoScriptError):
                self._gcra.load_later("")
            log.warning("redis unavailable during rate limit: %s", type(error).__name__)
            raise StoreUnavailable("cache unavailable (rate limit)") from error
        reply = future.result()
        return bool(reply[0]), float(reply[1])

    async def rate_limit(
        self, key: str, *, now_ms: str, interval_ms: str, tolerance_ms: str, cost: int
    ) -> tuple[bool, float]:
        """:meth:`rate_limit_submit` and wait for it (loading the script on NOSCRIPT)."""
        args = (key, now_ms, interval_ms, tolerance_ms, cost)
        with redis_errors("rate limit"):
            reply = await self._gcra(*args)
        return bool(reply[0]), float(reply[1])

    def stream_keys(self) -> list[str]:
        return [self.stream_key(shard) for shard in range(self.shards)]

    def key_pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix (the sunset deletes them all)."""
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix)
        return f"{escaped}:*"

    def key_kind(self, key: bytes | str) -> str:
        """Which part of the layout a key of this prefix is: ``st``, ``scans``, ``sid``, ``rp``,
        ``rl:t``, ``rl:c``, ``layout``, or ``other``."""
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        rest = text.removeprefix(f"{self.prefix}:")
        if rest.startswith("layout:"):
            return "layout"
        if not rest.startswith("{") or "}:" not in rest:
            return "other"
        parts = rest.split("}:", 1)[1].split(":")
        if parts[0] == "rl" and len(parts) > 1 and parts[1] in {"t", "c"}:
            return f"rl:{parts[1]}"
        return parts[0] if parts[0] in {"st", "scans", "sid", "rp"} else "other"

    async def verify_and_record(
        self,
        subject: bytes,
        *,
        now: int,
        pass_version: int,
        scan_id: str,
        record: str,
        token_id: bytes,
        place: str,
    ) -> LiveStatus | None:
        """One round trip: live status plus the scan appended with its snapshot, or None.

        The scan is flagged as a replay in the stream when the same pass (``token_id``) was
        scanned at another ``place`` within the replay window; the decision is not affected.
        Batched calls need no deadline of their own: the batch they ride in has one.
        """
        tag = self._tags[int.from_bytes(subject[:4], "big") % self.shards]  # shard_of, inlined
        script = self._verify
        key = f"{tag}:st:{subject.hex()}"
        command = (
            "EVALSHA",
            script.sha,
            script.numkeys,
            key,
            f"{tag}:scans",
            f"{tag}:sid:{scan_id}",
            f"{tag}:rp:{token_id.hex()}",
            now,
            pass_version,
            self.dedupe_ttl,
            record,
            place,
            self.replay_window,
        )
        try:
            try:  # the batch future awaited here, not through Script: one coroutine level less
                found = await script.transport.submit(command, key)
            except NoScriptError:
                found = await script.load_and_retry(command, key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis unavailable during verify: %s", type(exc).__name__)
            raise StoreUnavailable("cache unavailable (verify)") from exc
        return None if found is None else LiveStatus.from_fields(found)

    async def record(self, shard_key: bytes, scan_id: str, record: str) -> bool:
        """Append a scan whose decision is already known; False when the scan id was seen."""
        shard = self.shard_of(shard_key)
        with redis_errors("record scan"):
            added = await self._append(
                self.stream_key(shard), self.dedupe_key(shard, scan_id), self.dedupe_ttl, record
            )
        return bool(added)

    async def get_status(self, subject: bytes) -> LiveStatus | None:
        key = self.status_key(subject)
        with redis_errors("read status"):
            found = await self.transport.submit(("HMGET", key, "c", "v", "u", "n"), key)
        if found[1] is None:
            return None
        return LiveStatus.from_fields(cast("list[bytes]", found))

    async def put_status(self, subject: bytes, status: LiveStatus) -> None:
        color = "" if status.color is None else status.color.value
        with redis_errors("write status"):
            await self._put_status(
                self.status_key(subject),
                status.version,
                color,
                status.valid_until,
                status.holder,
            )

    async def put_statuses(
        self, items: Sequence[tuple[bytes, LiveStatus]], *, batch: int = 1000
    ) -> int:
        """:meth:`put_status` for many subjects at once (seeding): the same script and keys,
        pipelined, one round trip per ``batch`` under its own deadline (the per-call timeout
        plus a millisecond per item). Returns how many were written; the others already held a
        newer version, which the script never moves back."""
        written = 0
        transport, script = self.transport, self._put_status
        with redis_errors("write statuses"):
            await transport.execute([(("SCRIPT", "LOAD", script.source), "")], timeout=self.timeout)
            for start in range(0, len(items), batch):
                commands = []
                for subject, status in items[start : start + batch]:
                    key = self.status_key(subject)
                    color = "" if status.color is None else status.color.value
                    args = (key, status.version, color, status.valid_until, status.holder)
                    commands.append((("EVALSHA", script.sha, 1, *args), key))
                results = await transport.execute(
                    commands, timeout=self.timeout + 0.001 * len(commands)
                )
                written += sum(int(r) for r in results)
        return written

    async def check_layout(self) -> None:
        """Refuse to run with another shard count than the data was written with.

        The shard is part of every key, so two processes disagreeing on it would read and write
        different status keys for the same subject (a CLI override the service never sees).
        """
        key = f"{self.prefix}:layout:shards"
        with redis_errors("check layout"):
            _, stored = await self.transport.execute(
                [(("SET", key, self.shards, "NX"), key), (("GET", key), key)], timeout=self.timeout
            )
        if stored is not None and int(stored) != self.shards:
            raise LayoutMismatchError(
                f"Redis under prefix {self.prefix!r} was written with {int(stored)} scan shards;"
                f" set PASSCODE_SCAN_SHARDS={int(stored)}"
            )

    async def ping(self) -> None:
        with redis_errors("ping"):
            await self.transport.execute([(("PING",), "")], timeout=self.timeout, durable=False)

    async def close(self) -> None:
        """Close the transport's connections."""
        await self.transport.close()
