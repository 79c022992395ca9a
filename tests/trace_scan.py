"""The proof that deleted people left no trace: a real ``pg_dump`` and a SCAN of all of Redis.

After a deletion (``DELETE /v1/me``, the retention purge) or the sunset, a test gives
:func:`trace_scan` the database URL, a Redis client (or URL) and the needles it must no longer
find: user ids, keyed hashes, sealed ids, masked names, subject ids, scan ids. It dumps the whole
database with the ``pg_dump`` of the server's major version (what an operator's backup would
hold, every table and partition, not only those a query thinks of) and reads every key of
Redis (every primary of a cluster) with its value of whatever type, then says where each
needle was found. Every test that asserts "nothing found" runs it before the deletion too, as
a control, so a helper that found nothing anywhere could not pass it.

Each needle is looked for in every form it could be stored in: a text as UTF-8, as the hex of
its UTF-8 (a text inside a bytea) and as JSON's ``\\uXXXX`` escapes (a UUID also as its 32 hex
digits, how a bytea would hold it); bytes raw,
as hex (either case: ``pg_dump`` writes bytea as hex, keys carry hex), as standard and url-safe
base64, and as text when they are UTF-8.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from passcode.config import Settings
from tests.helpers import redis_client

Needle = str | bytes

PG_DUMP_TIMEOUT = 120.0
SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class Hit:
    """One place a needle was found: ``source`` is ``pg_dump`` or ``redis``; ``where`` names
    the dump's line and the table being copied there, or the key and the part of its value."""

    source: str
    where: str
    form: str


@dataclass
class TraceReport:
    """Where each needle was found (an empty list: nowhere), and what was searched."""

    hits: dict[Needle, list[Hit]]
    dump_bytes: int = 0
    redis_keys: int = 0
    pg_dump: str = ""
    notes: list[str] = field(default_factory=list)

    def found(self) -> dict[Needle, list[Hit]]:
        """Only the needles found somewhere."""
        return {needle: hits for needle, hits in self.hits.items() if hits}

    def missing(self) -> list[Needle]:
        """The needles found nowhere."""
        return [needle for needle, hits in self.hits.items() if not hits]

    def sources(self, needle: Needle) -> set[str]:
        return {hit.source for hit in self.hits[needle]}


def forms(needle: Needle) -> list[tuple[str, bytes, bool]]:
    """(name, bytes to look for, case-insensitive) for every form ``needle`` may be stored in."""
    found: list[tuple[str, bytes, bool]] = []
    if isinstance(needle, str):
        if not needle:
            raise ValueError("an empty needle is found everywhere")
        found.append(("text", needle.encode(), False))
        # A text kept as bytes in a bytea (a dead letter's raw fields): pg_dump shows its hex.
        found.append(("text-hex", needle.encode().hex().encode(), True))
        escaped = json.dumps(needle)[1:-1]
        if escaped != needle:
            found.append(("json-escaped", escaped.encode(), False))
        with contextlib.suppress(ValueError):
            found.append(("uuid-hex", uuid.UUID(needle).hex.encode(), True))
    else:
        if len(needle) < 4:
            raise ValueError("a byte needle shorter than 4 bytes would be found by chance")
        found.append(("raw", needle, False))
        found.append(("hex", needle.hex().encode(), True))
        found.append(("base64", base64.b64encode(needle).rstrip(b"="), False))
        found.append(("base64url", base64.urlsafe_b64encode(needle).rstrip(b"="), False))
        with contextlib.suppress(UnicodeDecodeError):
            needle.decode("utf-8")
            found.append(("utf-8", needle, False))
    unique: dict[bytes, tuple[str, bytes, bool]] = {}
    for name, value, fold in found:
        unique.setdefault(value.lower() if fold else value, (name, value, fold))
    return list(unique.values())


class _Haystack:
    """Bytes searched for many needles, exactly and case-folded (for hex)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.folded = data.lower()

    def offsets(self, value: bytes, *, fold: bool) -> Iterable[int]:
        data, value = (self.folded, value.lower()) if fold else (self.data, value)
        start = data.find(value)
        while start != -1:
            yield start
            start = data.find(value, start + 1)


# --- PostgreSQL: a real pg_dump ----------------------------------------------------------------


def _candidates() -> list[Path]:
    """Every pg_dump on this machine: $PG_DUMP, the embedded pgserver's, the system's."""
    paths: list[Path] = []
    if os.environ.get("PG_DUMP"):
        paths.append(Path(os.environ["PG_DUMP"]))
    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or []) if spec else []:
        paths.append(Path(location) / "pginstall" / "bin" / "pg_dump")
    paths.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump")))
    which = shutil.which("pg_dump")
    if which:
        paths.append(Path(which))
    return [p for p in dict.fromkeys(paths) if p.is_file() and os.access(p, os.X_OK)]


async def _major_of(binary: Path) -> int | None:
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    match = re.search(rb"\) (\d+)", out)
    return int(match.group(1)) if match else None


async def server_major(database_url: str) -> int:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        number = int(await conn.fetchval("SHOW server_version_num", timeout=10))
    finally:
        await conn.close()
    return number // 10000


async def find_pg_dump(major: int) -> Path:
    """The pg_dump of the server's major version; else the nearest newer one (pg_dump reads
    older servers, never newer ones). The test is skipped, saying so, when there is none."""
    by_major: dict[int, Path] = {}
    for binary in _candidates():
        found = await _major_of(binary)
        if found is not None:
            by_major.setdefault(found, binary)
    if major in by_major:
        return by_major[major]
    newer = sorted(m for m in by_major if m > major)
    if newer:
        return by_major[newer[0]]
    pytest.skip(
        f"no pg_dump for PostgreSQL {major} on this machine (found majors {sorted(by_major)});"
        " install postgresql-client or set PG_DUMP"
    )


async def pg_dump(database_url: str) -> tuple[bytes, Path]:
    """The plain-SQL dump of the whole database (schema, every row, large objects)."""
    binary = await find_pg_dump(await server_major(database_url))
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "--no-owner",
        "--no-privileges",
        "--format=plain",
        f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), PG_DUMP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"{binary} failed ({process.returncode}): {err.decode()[-2000:]}")
    return out, binary


_COPY = re.compile(rb"^COPY ([^ ]+) ", re.MULTILINE)


def _search_dump(dump: bytes, needle: Needle) -> list[Hit]:
    lines = [0, *(m.end() for m in re.finditer(rb"\n", dump))]
    copies = [(m.start(), m.group(1).decode()) for m in _COPY.finditer(dump)]
    starts = [start for start, _ in copies]
    haystack = _Haystack(dump)
    hits: list[Hit] = []
    for name, value, fold in forms(needle):
        for offset in haystack.offsets(value, fold=fold):
            line = bisect.bisect_right(lines, offset)
            at = bisect.bisect_right(starts, offset) - 1
            table = copies[at][1] if at >= 0 else "schema"
            hits.append(Hit("pg_dump", f"line {line} ({table})", name))
    return hits


# --- Redis: every key, every type ----------------------------------------------------------------


async def _nodes(client: Any) -> AsyncIterator[aioredis.Redis]:
    """One plain client per primary: the client itself on a single Redis; on a cluster a
    client of each primary, so SCAN walks every node and each value is read where it lives."""
    if not isinstance(client, aioredis.RedisCluster):
        yield client
        return
    await client.initialize()
    for node in client.get_primaries():
        plain = aioredis.Redis(host=node.host, port=int(node.port), socket_timeout=5)
        try:
            yield plain
        finally:
            await plain.aclose()


async def _stream_parts(node: Any, key: bytes) -> list[tuple[str, bytes]]:
    parts: list[tuple[str, bytes]] = []
    for entry_id, fields in await node.xrange(key, "-", "+"):
        for name, value in fields.items():
            parts.extend(
                [(f"entry {entry_id!r} name", name), (f"entry {entry_id!r} {name!r}", value)]
            )
    for group in await node.xinfo_groups(key):
        parts.append(("group", group["name"]))
        parts.extend(
            ("consumer", consumer["name"])
            for consumer in await node.xinfo_consumers(key, group["name"])
        )
    return parts


async def _value_parts(node: Any, key: bytes) -> list[tuple[str, bytes]] | None:
    """(part, bytes) of the key's value; None when it vanished meanwhile (an expiry)."""
    kind = (await node.type(key)).decode()
    if kind == "none":
        return None
    if kind == "string":
        return [("value", await node.get(key) or b"")]
    if kind == "hash":
        fields = (await node.hgetall(key)).items()
        return [p for n, v in fields for p in (("field name", n), (f"field {n!r}", v))]
    if kind == "list":
        return [("item", item) for item in await node.lrange(key, 0, -1)]
    if kind == "set":
        return [("member", member) for member in await node.smembers(key)]
    if kind == "zset":
        return [("member", m) for m, _ in await node.zrange(key, 0, -1, withscores=True)]
    if kind == "stream":
        return await _stream_parts(node, key)
    # A type this helper cannot read could hide a trace: fail rather than pass blind.
    raise TypeError(f"redis key {key!r} holds a {kind}, which trace_scan cannot read")


async def redis_parts(client: Any, match: str | None = None) -> list[tuple[bytes, str, bytes]]:
    """(key, part, bytes) for every key (and its name) on every primary."""
    found: list[tuple[bytes, str, bytes]] = []
    async for node in _nodes(client):
        async for key in node.scan_iter(match=match, count=SCAN_COUNT):
            parts = await _value_parts(node, key)
            if parts is None:
                continue
            found.append((key, "key name", key))
            found.extend((key, part, value) for part, value in parts)
    return found


def _search_redis(parts: list[tuple[bytes, str, bytes]], needle: Needle) -> list[Hit]:
    hits: list[Hit] = []
    needle_forms = forms(needle)
    for key, part, value in parts:
        haystack = _Haystack(value)
        for name, form, fold in needle_forms:
            if next(iter(haystack.offsets(form, fold=fold)), None) is not None:
                hits.append(Hit("redis", f"key {key!r} {part}", name))
    return hits


# --- both ----------------------------------------------------------------------------------------


async def trace_scan(
    database_url: str,
    redis: Any,
    needles: Iterable[Needle],
    *,
    match: str | None = None,
) -> TraceReport:
    """Where each needle is found in a ``pg_dump`` of ``database_url`` and in every key of
    ``redis`` (a redis-py asyncio client, single or cluster, or a URL); ``match`` narrows the
    SCAN to a key pattern (every key by default)."""
    wanted = list(dict.fromkeys(needles))
    for needle in wanted:
        forms(needle)  # refuse empty or too-short needles before the slow part
    dump, binary = await pg_dump(database_url)
    own = isinstance(redis, str)
    client = aioredis.Redis.from_url(redis, socket_timeout=5) if own else redis
    try:
        parts = await redis_parts(client, match)
    finally:
        if own:
            await client.aclose()
    return TraceReport(
        hits={n: _search_dump(dump, n) + _search_redis(parts, n) for n in wanted},
        dump_bytes=len(dump),
        redis_keys=len({key for key, _, _ in parts}),
        pg_dump=str(binary),
    )


async def trace_settings(
    settings: Settings, needles: Iterable[Needle], *, match: str | None = None
) -> TraceReport:
    """:func:`trace_scan` on the database and Redis (single or cluster) ``settings`` name."""
    client = redis_client(settings)
    try:
        return await trace_scan(settings.database_url or "", client, needles, match=match)
    finally:
        await client.aclose()
