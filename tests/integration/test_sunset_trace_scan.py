"""The trace helper finds what was planted, wherever and in whatever form it was stored.

Without this, "the deleted people are found nowhere" could pass because the helper looks
nowhere: each test plants needles of its own in a real table (bytea, text, jsonb, bytea[]) and in
Redis keys of every type, and checks each is reported at the place it was put, and that a
needle never planted (and the planted ones once removed) is found nowhere.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from passcode.config import Settings
from tests.helpers import redis_client
from tests.trace_scan import Hit, forms, trace_scan, trace_settings


@pytest.fixture
async def probe_table(settings: Settings) -> AsyncIterator[str]:
    """A table of the test's own in the run's database, dropped after it."""
    name = f"trace_probe_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        await conn.execute(f"CREATE TABLE {name} (b bytea, t text, j jsonb, a bytea[], u uuid)")
        yield name
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Any]:
    client = redis_client(settings)
    try:
        yield client
    finally:
        await client.aclose()


def _only(hits: list[Hit], source: str) -> list[Hit]:
    return [hit for hit in hits if hit.source == source]


async def test_finds_needles_planted_in_each_postgres_column_kind(
    settings: Settings, probe_table: str, redis: Any
) -> None:
    """A sealed id in a bytea (found as hex), a masked name in text and in jsonb (found as
    UTF-8), a keyed hash and a text (found as the hex of its UTF-8) inside a bytea[], a scan id in a uuid column are each reported at
    the dump line of the planted table; a needle never planted is found nowhere."""
    sealed, keyed = os.urandom(28), os.urandom(32)
    name, scan_id, absent = f"张*{secrets.token_hex(3)}", str(uuid.uuid4()), os.urandom(16)
    in_bytes = str(uuid.uuid4())  # a scan id inside a dead letter's raw bytes
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        await conn.execute(
            f"INSERT INTO {probe_table} VALUES ($1, $2, $3::jsonb, $4, $5)",  # noqa: S608  # the fixture's own name
            sealed,
            name,
            f'{{"holder": "{name}"}}',
            [b"x", keyed, f"r|{in_bytes}|x".encode()],
            uuid.UUID(scan_id),
        )
    finally:
        await conn.close()

    report = await trace_scan(
        settings.database_url or "", redis, [sealed, keyed, name, scan_id, in_bytes, absent]
    )

    for needle in (sealed, keyed, name, scan_id, in_bytes):
        hits = _only(report.hits[needle], "pg_dump")
        assert hits, f"{needle!r} planted but not found"
        assert all(probe_table in hit.where for hit in hits), hits
    assert {h.form for h in report.hits[sealed]} == {"hex"}
    assert {h.form for h in report.hits[keyed]} == {"hex"}
    assert {h.form for h in report.hits[in_bytes]} == {"text-hex"}
    assert len(_only(report.hits[name], "pg_dump")) == 2  # the text column and the jsonb
    assert report.hits[absent] == []
    assert report.missing() == [absent]
    assert report.dump_bytes > 0
    assert report.pg_dump


async def test_finds_needles_in_every_kind_of_redis_value_and_in_key_names(
    settings: Settings, redis: Any
) -> None:
    """A needle in a string, a hash field's value and name, a list, a set, a sorted set, a
    stream entry, a stream's consumer group, and a key's name (as hex) is reported at that key;
    deleted, none is found any more (the control that the hits were not of something else)."""
    base = f"{settings.redis_prefix}:trace:{secrets.token_hex(4)}"
    needles: dict[str, bytes] = {
        kind: os.urandom(12)
        for kind in (
            "string",
            "hash-value",
            "hash-field",
            "list",
            "set",
            "zset",
            "stream",
            "group",
            "name",
        )
    }
    keys = {kind: f"{base}:{kind}" for kind in needles}
    keys["name"] = f"{base}:st:{needles['name'].hex()}"
    await redis.set(keys["string"], b"prefix" + needles["string"] + b"suffix")
    await redis.hset(keys["hash-value"], mapping={b"n": needles["hash-value"]})
    await redis.hset(keys["hash-field"], mapping={needles["hash-field"]: b"1"})
    await redis.rpush(keys["list"], b"a", needles["list"])
    await redis.sadd(keys["set"], needles["set"])
    await redis.zadd(keys["zset"], {needles["zset"]: 1.0})
    await redis.xadd(keys["stream"], {b"r": b"scan|" + needles["stream"].hex().encode()})
    await redis.xadd(keys["group"], {b"r": b"x"})
    await redis.xgroup_create(keys["group"], needles["group"].hex(), id="0")
    await redis.set(keys["name"], b"1")
    try:
        report = await trace_settings(settings, needles.values())
        for kind, needle in needles.items():
            hits = _only(report.hits[needle], "redis")
            assert hits, f"{kind}: planted in {keys[kind]} but not found"
            assert all(keys[kind] in hit.where for hit in hits), (kind, hits)
        assert report.redis_keys >= len(keys)
    finally:
        for key in keys.values():
            await redis.delete(key)

    after = await trace_settings(settings, needles.values())
    assert after.found() == {}


async def test_a_url_is_enough_for_a_single_redis(settings: Settings) -> None:
    """Given a Redis URL instead of a client, the helper opens its own and finds a key there."""
    if settings.redis_cluster_nodes:
        pytest.skip("a URL names one node; on a cluster the tests pass a cluster client")
    needle = os.urandom(16)
    client = redis_client(settings)
    key = f"{settings.redis_prefix}:trace:{secrets.token_hex(4)}"
    try:
        await client.set(key, needle)
        report = await trace_scan(settings.database_url or "", settings.redis_url or "", [needle])
        assert [hit.form for hit in report.hits[needle]] == ["raw"]
    finally:
        await client.delete(key)
        await client.aclose()


def test_forms_cover_hex_base64_json_escapes_and_uuid_hex() -> None:
    """The forms looked for: bytes raw, hex (case-folded), base64 and base64url; text as UTF-8
    and JSON-escaped; a UUID also as 32 hex digits. Needles that would match by chance are
    refused."""
    assert [name for name, _, _ in forms(b"\x00\x01\x02\xff")] == [
        "raw",
        "hex",
        "base64",
        "base64url",
    ]
    assert [name for name, _, _ in forms("张*三")] == ["text", "text-hex", "json-escaped"]
    scan = str(uuid.uuid4())
    assert ("uuid-hex", uuid.UUID(scan).hex.encode(), True) in forms(scan)
    with pytest.raises(ValueError, match="empty"):
        forms("")
    with pytest.raises(ValueError, match="shorter"):
        forms(b"ab")
