"""Redis Cluster failover rows of the fault table (DESIGN §5-6): real load on a real service
process while a primary of a real 3+3 cluster (passcode/localcluster.py) dies, freezes past
``cluster-node-timeout``, or gives its slots away in a live migration.

Replication is asynchronous: a scan acknowledged by a primary that dies before its replica has
it would be lost, unless every pipeline waits for a replica (``WAIT 1``, the default on a
cluster). With the wait on, every row asserts no acknowledged scan lost and no admit without a
live status; with it off (``PASSCODE_REDIS_WAIT_REPLICAS=0``) the row reports how many were
lost, as seen (on loopback the replica is usually there in time). Each row also checks that the
service uses the promoted replica afterwards (the slot map was refreshed), by the commands that
node answered.

``make chaos`` runs them with ``CHAOS_SECONDS=10``; the suite runs a short form.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from passcode.localcluster import LocalCluster, Node, local_cluster
from tests.chaos.harness import (
    LATENCY_BOUND,
    LEAD,
    Load,
    N,
    PgTemplate,
    PostgresServer,
    Result,
    Row,
    Seeded,
    Service,
    make_row,
    seed,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TAIL = min(1.0 + N / 5, 3.0)  # load after the cluster is whole again
PROMOTION_WAIT = 30.0
# Commands a node counts that are not the service's (our own probes, the cluster's upkeep).
# The replica wait on (the default) and off; the suite's short form freezes with it on only.
FREEZE_WAITS: list[int | None] = [None, 0] if N >= 5 else [None]
NOT_SERVICE = {"info", "ping", "cluster", "replconf", "psync", "command", "config", "sync"}


class ClusterService(Service):
    """The service pointed at the cluster's seed nodes, the replica wait as given."""

    def __init__(self, folder: Path, *, database_url: str, cluster: LocalCluster, wait: int | None):
        super().__init__(
            folder, database_url=database_url, redis_url=f"redis://{cluster.nodes[0].address}/0"
        )
        self.cluster = cluster
        self.wait_replicas = wait

    def environ(self) -> dict[str, str]:
        env = super().environ()
        env["PASSCODE_REDIS_CLUSTER_NODES"] = self.cluster.seeds
        # A prefix of the run's own: nothing another row left in the streams reaches our tables.
        env["PASSCODE_REDIS_PREFIX"] = f"chaos-{uuid.uuid4().hex[:8]}"
        env["PASSCODE_SCAN_SHARDS"] = "12"  # streams on every primary
        if self.wait_replicas is not None:
            env["PASSCODE_REDIS_WAIT_REPLICAS"] = str(self.wait_replicas)
        return env


@dataclass
class Rig:
    cluster: LocalCluster
    postgres: PostgresServer
    service: ClusterService
    seeded: Seeded


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path / "cluster") as started:
        yield started


async def open_rig(
    tmp_path: Path, cluster: LocalCluster, pg_template: PgTemplate, wait: int | None
) -> Rig:
    postgres = PostgresServer(pg_template)
    await asyncio.to_thread(postgres.start)
    service = ClusterService(
        tmp_path / "service", database_url=postgres.url, cluster=cluster, wait=wait
    )
    try:
        await asyncio.to_thread(service.start)
        seeded = await seed(service, citizens=12)
    except BaseException:
        await asyncio.to_thread(service.stop)
        postgres.stop()
        raise
    return Rig(cluster, postgres, service, seeded)


async def close_rig(rig: Rig) -> None:
    await asyncio.to_thread(rig.service.stop)
    rig.postgres.stop()


def service_calls(cluster: LocalCluster, node: Node) -> int:
    """Commands ``node`` has executed for clients (and, as a replica, from its primary)."""
    total = 0
    for line in cluster.ask(node, "INFO", "commandstats", timeout=2.0).splitlines():
        name, _, stats = line.partition(":")
        command = name.removeprefix("cmdstat_").split("|", 1)[0]
        if not name.startswith("cmdstat_") or command in NOT_SERVICE:
            continue
        fields = dict(kv.split("=", 1) for kv in stats.split(","))
        total += int(fields["calls"])
    return total


def busiest_primary(cluster: LocalCluster) -> Node:
    """The primary holding the most keys: the one whose fault the load meets most."""
    return max(cluster.primary_nodes(), key=lambda n: int(cluster.ask(n, "DBSIZE") or 0))


def slots_to_move(cluster: LocalCluster, source: Node) -> list[int]:
    """Which of ``source``'s slots to migrate (redis-cli takes them lowest first): all of
    them under ``make chaos``; in the suite's short form, up to its first slot holding keys,
    so the move still carries some of the load's keys but takes a few seconds, not many."""
    owned = sorted(cluster.slots()[source.port])
    if N >= 5:
        return owned
    held = sorted(
        {
            int(cluster.ask(source, "CLUSTER", "KEYSLOT", key))
            for key in cluster.ask(source, "KEYS", "*").split()
        }
    )
    return owned[: owned.index(held[0]) + 1]


def replica_of(cluster: LocalCluster, primary: Node) -> Node:
    """The running node that replicates ``primary`` (its heir when it fails)."""
    primary_id = cluster.ask(primary, "CLUSTER", "MYID")
    for node in cluster.running():
        for line in cluster.ask(node, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) > 3 and "myself" in parts[2] and parts[3] == primary_id:
                return node
    raise AssertionError(f"no replica of {primary.address}")


def wait_promoted(cluster: LocalCluster, old: Node, new: Node) -> float:
    """Until ``new`` (the old primary's replica) serves slots as a primary, as ``new`` sees it;
    the seconds it took."""
    start = time.monotonic()
    while True:
        info = cluster.ask(new, "INFO", "replication", timeout=2.0)
        if "role:master" in info and cluster.info(new).get("cluster_state") == "ok":
            return time.monotonic() - start
        if time.monotonic() - start > PROMOTION_WAIT:
            raise AssertionError(f"{new.address} not promoted after {old.address} failed")
        time.sleep(0.05)


async def under_load(rig: Rig, fault: Callable[[], Awaitable[None]]) -> list[Result]:
    """Load for LEAD seconds, then the fault (which returns once the cluster is whole), then
    TAIL seconds."""
    load = Load(rig.service, rig.seeded)
    running = asyncio.create_task(load.run(seconds=LEAD + N + TAIL + 240))
    try:
        await asyncio.sleep(LEAD)
        await fault()
        await asyncio.sleep(TAIL)
    finally:
        load.stop()
        await running
    return load.results


def wait_label(wait: int | None) -> str:
    return "WAIT 1" if wait is None else f"WAIT {wait}"


def check(row: Row, *, wait_on: bool) -> None:
    """Always: scans got through, no blind admit, no answer past the bound. With the replica
    wait on: no acknowledged scan lost."""
    assert row.acknowledged > 0, "the load never got a single scan through"
    assert row.blind_admits == 0, f"{row.blind_admits} admits without a live status"
    assert row.worst <= LATENCY_BOUND, f"an answer took {row.worst:.2f} s > {LATENCY_BOUND} s"
    if wait_on:
        assert row.lost == 0, f"{row.lost} acknowledged scans are not in Postgres"
    else:
        print(f"  replica wait off: {row.lost} acknowledged scans lost (reported, not asserted)")


def check_no_server_errors(results: list[Result]) -> None:
    """A failing node is a fallback or a 503, never an error that escapes as a 500."""
    errors = [r for r in results if r.status is not None and r.status >= 500 and r.status != 503]
    assert not errors, f"{len(errors)} answers {sorted({r.status for r in errors})}"


@pytest.mark.parametrize("wait", [None, 0], ids=["wait-on", "wait-off"])
async def test_primary_killed_replica_promoted(
    tmp_path: Path, cluster: LocalCluster, pg_template: PgTemplate, wait: int | None
) -> None:
    """The busiest primary SIGKILLed under verify load and its replica promoted: verify falls
    back to PostgreSQL for its slots meanwhile (never admits blind), then uses the promoted
    node; with the replica wait on, no acknowledged scan is lost."""
    rig = await open_rig(tmp_path, cluster, pg_template, wait)
    victim = busiest_primary(cluster)
    heir = replica_of(cluster, victim)
    timings: dict[str, float] = {}

    async def fault() -> None:
        cluster.kill(victim)
        timings["promoted"] = await asyncio.to_thread(wait_promoted, cluster, victim, heir)
        await asyncio.sleep(max(0.0, N - timings["promoted"]))
        timings["calls"] = service_calls(cluster, heir)

    try:
        results = await under_load(rig, fault)
        used_after = service_calls(cluster, heir) - timings["calls"]
        row = await make_row(
            f"cluster primary SIGKILL, promoted, {wait_label(wait)}", results, rig.postgres.url
        )
    finally:
        await close_rig(rig)
    print(f"  promoted after {timings['promoted']:.2f} s; commands on it after: {used_after}")
    check(row, wait_on=wait is None)
    check_no_server_errors(results)
    assert used_after > 0, "the service never used the promoted replica: slot map not refreshed"


@pytest.mark.parametrize("wait", FREEZE_WAITS, ids=["wait-on", "wait-off"][: len(FREEZE_WAITS)])
async def test_primary_frozen_past_node_timeout_then_thawed(
    tmp_path: Path, cluster: LocalCluster, pg_template: PgTemplate, wait: int | None
) -> None:
    """The busiest primary SIGSTOPped past cluster-node-timeout (its replica is promoted), then
    SIGCONTed: it wakes up still thinking it is a primary and comes back as a replica. Whatever
    it took in that moment it drops; with the replica wait on, no caller heard yes for it."""
    rig = await open_rig(tmp_path, cluster, pg_template, wait)
    victim = busiest_primary(cluster)
    heir = replica_of(cluster, victim)
    timings: dict[str, float] = {}

    async def fault() -> None:
        cluster.freeze(victim)
        timings["promoted"] = await asyncio.to_thread(wait_promoted, cluster, victim, heir)
        await asyncio.sleep(max(0.0, N - timings["promoted"]))
        cluster.thaw(victim)
        await asyncio.to_thread(cluster.wait_healthy)
        timings["calls"] = service_calls(cluster, heir)

    try:
        results = await under_load(rig, fault)
        used_after = service_calls(cluster, heir) - timings["calls"]
        row = await make_row(
            f"cluster primary SIGSTOP, SIGCONT, {wait_label(wait)}",
            results,
            rig.postgres.url,
        )
    finally:
        cluster.thaw(victim)
        await close_rig(rig)
    role = cluster.ask(victim, "INFO", "replication")
    print(f"  promoted after {timings['promoted']:.2f} s; commands on it after: {used_after}")
    check(row, wait_on=wait is None)
    check_no_server_errors(results)
    assert "role:slave" in role, "the thawed primary did not come back as a replica"
    assert used_after > 0, "the service never used the promoted replica: slot map not refreshed"


async def test_slots_migrated_under_load(
    tmp_path: Path, cluster: LocalCluster, pg_template: PgTemplate
) -> None:
    """Slots of the busiest primary moved to another (redis-cli --cluster reshard) under
    verify load: MOVED and ASK are followed, nothing acknowledged is lost, no blind admit, and
    the target serves the moved keys afterwards (the suite's short form moves fewer slots)."""
    rig = await open_rig(tmp_path, cluster, pg_template, None)
    source = busiest_primary(cluster)
    target = next(n for n in cluster.primary_nodes() if n is not source)
    moved = slots_to_move(cluster, source)
    moving = len(moved)
    timings: dict[str, float] = {}

    async def fault() -> None:
        start = time.monotonic()
        await asyncio.to_thread(cluster.reshard, source, target, moving)
        timings["moved"] = time.monotonic() - start
        await asyncio.to_thread(cluster.wait_agreed)
        timings["calls"] = service_calls(cluster, target)

    try:
        results = await under_load(rig, fault)
        used_after = service_calls(cluster, target) - timings["calls"]
        row = await make_row(f"cluster reshard {moving} slots, WAIT 1", results, rig.postgres.url)
    finally:
        await close_rig(rig)
    print(
        f"  {moving} slots moved in {timings['moved']:.2f} s; target commands after: {used_after}"
    )
    check(row, wait_on=True)
    check_no_server_errors(results)
    assert not set(moved) & set(cluster.slots().get(source.port, [])), "slots left on the source"
    assert used_after > 0, "the target never answered the service after the move"
