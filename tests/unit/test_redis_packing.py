"""The hiredis command packer puts the same bytes on the wire as redis-py's own."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from passcode.store.transport import create_client

COMMANDS = [
    (
        "EVALSHA",
        "a" * 40,
        3,
        "pc:{1}:st:ab",
        "pc:{1}:scans",
        "pc:{1}:sid:x",
        1795465381,
        7,
        172800,
        "r|1|2",
    ),
    ("HMGET", "pc:{3}:st:00ff", "c", "v", "u", "n"),
    ("XGROUP CREATE", "pc:{0}:scans", "drain", "0", "MKSTREAM"),
    (b"SCRIPT LOAD", "return 1"),
    ("SET", "k", b"\x00\xff binary", "EX", 5),
    ("HSET", "k", "n", "张*三", "f", 1.5),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_hiredis_packing_matches_redis_py(command: tuple[object, ...]) -> None:
    """Every command shape passcode sends (multi-word names, ints, floats, bytes, UTF-8)
    packs to exactly what redis-py's Python packer would send."""
    ours = create_client("redis://127.0.0.1:1/0", timeout=1, max_connections=1)
    stock = aioredis.Redis.from_url("redis://127.0.0.1:1/0", protocol=2)
    packed = b"".join(ours.connection_pool.make_connection().pack_command(*command))
    expected = b"".join(stock.connection_pool.make_connection().pack_command(*command))
    assert packed == expected
