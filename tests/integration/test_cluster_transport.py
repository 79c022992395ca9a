"""The Redis Cluster transport (passcode/store/transport.py: ClusterTransport) on a real cluster
of 3 primaries and 3 replicas started on loopback (passcode/localcluster.py): commands routed
by hash slot, one pipeline per node per event-loop turn, MOVED and ASK followed during a live
slot migration, keyless commands on every primary, WAIT for a replica, and the service's cache
layout working across the nodes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from passcode.config import Settings
from passcode.domain.model import Color
from passcode.domain.status import LiveStatus
from passcode.errors import StoreUnavailable
from passcode.localcluster import LocalCluster, local_cluster
from passcode.store import scanstream
from passcode.store.transport import ClusterTransport, ReplicaWaitFailed, Transport
from passcode.wiring import open_cache


@pytest.fixture(scope="module")
def cluster(
    redis_cluster: LocalCluster | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """The run's cluster when the suite runs on one, else one of this module's own."""
    if redis_cluster is not None:
        yield redis_cluster
        return
    with local_cluster(tmp_path_factory.mktemp("cluster")) as own:
        yield own


def seeds(cluster: LocalCluster) -> list[tuple[str, int]]:
    return [("127.0.0.1", node.port) for node in cluster.nodes[:2]]


@pytest.fixture
async def transport(cluster: LocalCluster) -> AsyncIterator[ClusterTransport]:
    opened = ClusterTransport(
        seeds(cluster), url="redis://127.0.0.1/0", timeout=2.0, max_connections=8
    )
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def cluster_settings(settings: Settings, cluster: LocalCluster) -> Settings:
    return dataclasses.replace(
        settings,
        redis_url=f"redis://{cluster.nodes[0].address}/0",
        redis_cluster_nodes=tuple(cluster.seeds.split(",")),
        scan_shards=12,
    )


def keys_on_every_primary(transport: ClusterTransport, prefix: str, per_node: int) -> list[str]:
    """Keys whose slots fall on each primary, ``per_node`` of each."""
    found: dict[str, list[str]] = {}
    i = 0
    while len(found) < 3 or any(len(v) < per_node for v in found.values()):
        key = f"{prefix}:{{k{i}}}"
        owner = transport._slots[transport.slot(key)]  # private: which node owns the slot
        assert owner is not None
        if len(found.setdefault(owner, [])) < per_node:
            found[owner].append(key)
        i += 1
    return [k for keys in found.values() for k in keys]


async def test_commands_reach_the_node_owning_their_slot_and_answer_in_order(
    transport: ClusterTransport, settings: Settings
) -> None:
    """SET then GET of keys spread over all three primaries, as one execute: every reply in
    order, no MOVED left for the caller."""
    await transport.execute([(("PING",), "")], timeout=5)
    keys = keys_on_every_primary(transport, settings.redis_prefix, 4)
    sets = [(("SET", k, f"v-{k}"), k) for k in keys]
    gets = [(("GET", k), k) for k in keys]
    assert await transport.execute(sets, timeout=5) == [b"OK"] * len(keys)
    assert await transport.execute(gets, timeout=5) == [f"v-{k}".encode() for k in keys]


async def test_one_turns_commands_go_out_as_one_pipeline_per_node(
    transport: ClusterTransport, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty commands submitted in one turn over three primaries: three writes, ten each."""
    await transport.execute([(("PING",), "")], timeout=5)
    keys = keys_on_every_primary(transport, settings.redis_prefix, 10)
    sizes: list[int] = []
    original = Transport._send

    async def counting(self: Transport, batch: Any, timeout: float | None = None) -> None:
        sizes.append(len(batch))
        await original(self, batch, timeout)

    monkeypatch.setattr(Transport, "_send", counting)  # private: count the node pipelines
    replies = await asyncio.gather(*(transport.submit(("INCR", k), k) for k in keys))
    assert sorted(sizes) == [10, 10, 10]
    assert len(replies) == 30


async def test_keyless_commands_go_to_every_primary(
    transport: ClusterTransport, cluster: LocalCluster
) -> None:
    """SCRIPT LOAD with no key loads the script on each primary (its NOSCRIPT can come from
    any of them)."""
    source = "return 'cluster-transport-test'"
    (sha,) = await transport.execute([(("SCRIPT", "LOAD", source), "")], timeout=5)
    for node in cluster.primary_nodes():
        assert cluster.ask(node, "SCRIPT", "EXISTS", sha.decode()) == "1"


async def test_a_slot_moved_under_load_is_followed_and_no_command_fails(
    transport: ClusterTransport, cluster: LocalCluster, settings: Settings
) -> None:
    """A live migration (redis-cli --cluster reshard) of 200 slots while INCRs run on keys in
    them, batched (submit) and as pipelines of their own (execute) in turn: every INCR answers
    (MOVED and ASK followed), and the counts add up exactly."""
    await transport.execute([(("PING",), "")], timeout=5)
    primaries = cluster.primary_nodes()
    source, target = primaries[0], primaries[1]
    owned = cluster.slots()[source.port]
    moving = set(owned[:200])
    keys: list[str] = []
    i = 0
    while len(keys) < 40:
        key = f"{settings.redis_prefix}:{{m{i}}}"
        if transport.slot(key) in moving:
            keys.append(key)
        i += 1
    done = asyncio.Event()
    counts = dict.fromkeys(keys, 0)
    failures: list[BaseException] = []

    async def load() -> None:
        turn = 0
        while not done.is_set():
            turn += 1
            if turn % 2:
                replies = await asyncio.gather(
                    *(transport.submit(("INCR", k), k) for k in keys), return_exceptions=True
                )
            else:
                incrs = [(("INCR", k), k) for k in keys]
                replies = await transport.execute(incrs, timeout=5, raise_errors=False)
            for key, reply in zip(keys, replies, strict=True):
                if isinstance(reply, BaseException):
                    failures.append(reply)
                else:
                    counts[key] += 1
            await asyncio.sleep(0.005)

    runner = asyncio.create_task(load())
    await asyncio.to_thread(cluster.reshard, source, target, 200)
    done.set()
    await runner
    assert failures == []
    stored = await transport.execute([(("GET", k), k) for k in keys], timeout=5)
    assert [int(v) for v in stored] == [counts[k] for k in keys]
    owners = {transport._slots[transport.slot(k)] for k in keys}  # private: the map followed
    assert owners == {target.address}
    await asyncio.to_thread(cluster.reshard, target, source, 200)  # leave the cluster as found


async def test_wait_for_a_replica_answers_once_it_holds_the_write(
    cluster: LocalCluster, settings: Settings
) -> None:
    """With WAIT 1 every pipeline's callers hear back only after a replica acknowledged; asking
    for more replicas than exist fails them with ReplicaWaitFailed (never a silent success)."""
    one = ClusterTransport(
        seeds(cluster),
        url="redis://x/0",
        timeout=2.0,
        max_connections=4,
        wait_replicas=1,
        wait_timeout_ms=500,
    )
    three = ClusterTransport(
        seeds(cluster),
        url="redis://x/0",
        timeout=2.0,
        max_connections=4,
        wait_replicas=3,
        wait_timeout_ms=50,
    )
    key = f"{settings.redis_prefix}:{{wait}}"
    try:
        assert await one.execute([(("SET", key, "1"), key)], timeout=5) == [b"OK"]
        with pytest.raises(ReplicaWaitFailed):
            await three.submit(("SET", key, "2"), key)
    finally:
        await one.close()
        await three.close()


async def test_the_cache_layout_works_across_the_nodes(cluster_settings: Settings) -> None:
    """The service's own cache on the cluster: the layout check, statuses written and read for
    subjects on every node, the verify script, and the drain's groups, reads and acks on every
    stream shard (each on its own node)."""
    cache = open_cache(cluster_settings)
    try:
        await cache.check_layout()
        subjects = [bytes([i]) * 16 for i in range(1, 40)]
        live = LiveStatus(Color.GREEN, 1, 4_000_000_000, "张*三")
        assert await cache.put_statuses([(s, live) for s in subjects]) == len(subjects)
        for subject in subjects:
            assert await cache.get_status(subject) == live
        await scanstream.create_groups(cache)
        for n, subject in enumerate(subjects):
            got = await cache.verify_and_record(
                subject,
                now=1_900_000_000,
                pass_version=1,
                scan_id=f"00000000-0000-7000-8000-{n:012d}",
                record=f"r{n}",
                token_id=subject,
                place="Gate",
            )
            assert got is not None
            assert got.color is Color.GREEN
        assert await scanstream.backlog(cache) == len(subjects)
        taken = 0
        for stream in cache.stream_keys():
            entries = await scanstream.take(
                cache, stream, consumer="test", count=100, claim_idle_ms=60_000
            )
            await scanstream.acknowledge(cache, stream, [entry_id for entry_id, _ in entries])
            taken += len(entries)
        assert taken == len(subjects)
        assert await scanstream.backlog(cache) == 0
    finally:
        await cache.close()


async def test_a_primary_short_of_replicas_refuses_scans_but_the_drain_still_empties_it(
    cluster_settings: Settings,
) -> None:
    """What a promoted primary without a replica yet looks like (here: asking for more replicas
    than any node has): a verify's scan is refused (StoreUnavailable: the caller falls back to
    PostgreSQL), but the readiness ping and the drain's groups, reads and acks skip the wait, so
    the scans acknowledged before the failover still leave its streams."""
    own = dataclasses.replace(cluster_settings, redis_prefix=f"{cluster_settings.redis_prefix}-s")
    cache = open_cache(own)
    starved = open_cache(dataclasses.replace(own, redis_wait_replicas=3, redis_wait_timeout_ms=20))
    try:
        subjects = [bytes([i]) * 16 for i in range(1, 13)]
        live = LiveStatus(Color.GREEN, 1, 4_000_000_000, "张*三")
        await cache.put_statuses([(s, live) for s in subjects])
        await scanstream.create_groups(cache)
        scan = {"now": 1_900_000_000, "pass_version": 1, "place": "Gate", "record": "r"}
        for n, subject in enumerate(subjects):
            scan_id = f"00000000-0000-7000-8000-{n:012d}"
            assert await cache.verify_and_record(subject, scan_id=scan_id, token_id=subject, **scan)
        with pytest.raises(StoreUnavailable):
            await starved.verify_and_record(
                subjects[0], scan_id="00000000-0000-7000-9000-000000000000", token_id=b"t", **scan
            )
        await starved.ping()
        await scanstream.create_groups(starved)
        taken = 0
        for stream in starved.stream_keys():
            entries = await scanstream.take(
                starved, stream, consumer="test", count=100, claim_idle_ms=60_000
            )
            await scanstream.acknowledge(starved, stream, [entry_id for entry_id, _ in entries])
            taken += len(entries)
        assert taken >= len(subjects)  # the refused scan's entry may be there too: stored once
        assert await scanstream.backlog(starved) == 0
    finally:
        await cache.close()
        await starved.close()


def test_a_cluster_node_named_as_a_single_redis_is_a_clear_error(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """PASSCODE_REDIS_URL at a cluster node without PASSCODE_REDIS_CLUSTER_NODES: the error
    says to name the nodes (it was a bare MovedError)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {
        "PATH": "/usr/bin:/bin",
        "PASSCODE_REDIS_URL": f"redis://{cluster.nodes[0].address}/0",
        "PASSCODE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
        "PASSCODE_DATA_DIR": str(tmp_path),
    }
    code = (
        "import asyncio\n"
        "from passcode.config import Settings\n"
        "from passcode.wiring import open_cache\n"
        "async def main():\n"
        "    cache = open_cache(Settings.from_env())\n"
        "    try:\n"
        "        await cache.check_layout()\n"
        "    finally:\n"
        "        await cache.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "PASSCODE_REDIS_CLUSTER_NODES" in done.stderr
