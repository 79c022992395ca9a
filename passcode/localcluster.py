"""A real Redis Cluster on loopback: primaries and replicas from the ``redis-server`` binary,
AOF on, for the tests, the local topology and the benchmarks (never the service itself).

Each node is a child process of ours (not daemonized), so a test can SIGKILL or SIGSTOP one by
its pid and start it again on its own folder. The cluster is made with
``redis-cli --cluster create``; nodes are asked with ``redis-cli`` too (passcode's own Redis
client lives in :mod:`passcode.store.transport` alone). Missing binaries are installed from
Debian's ``redis-server`` package when ``apt-get`` may run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 16384
READY_WAIT = 30.0


class ClusterError(RuntimeError):
    """The cluster could not be started or did not come back to a healthy state in time."""


def binaries() -> tuple[str, str]:
    """(redis-server, redis-cli), installing Debian's ``redis-server`` package if missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    apt = shutil.which("apt-get")
    if apt is None:
        raise ClusterError("redis-server is not installed and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "redis-server"]):
        done = subprocess.run(  # noqa: S603  # fixed arguments
            [*sudo, *command], capture_output=True, text=True, check=False, env=env, timeout=600
        )
        if done.returncode != 0 and command[1] == "install":
            raise ClusterError(f"apt-get install redis-server failed: {done.stderr[-500:]}")
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (server and cli):
        raise ClusterError("redis-server was installed but is not on PATH")
    return server, cli


def free_base_port(count: int) -> int:
    """A port P with P … P+count-1 and their cluster-bus ports (+10000) all free on loopback."""
    for base in range(21000, 29000, 17):
        if all(_free(p) and _free(p + 10000) for p in range(base, base + count)):
            return base
    raise ClusterError("no free run of loopback ports for a cluster")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on ``base_port`` onwards."""

    folder: Path
    base_port: int
    primaries: int = 3
    replicas: int = 1
    node_timeout_ms: int = 2000
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server, self.cli = binaries()
        count = self.primaries * (1 + self.replicas)
        self.nodes = [
            Node(port, self.folder / str(port))
            for port in range(self.base_port, self.base_port + count)
        ]

    @property
    def seeds(self) -> str:
        """Every node as ``host:port``, comma-separated: PASSCODE_REDIS_CLUSTER_NODES."""
        return ",".join(node.address for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node)
        fresh = not (self.nodes[0].folder / "nodes.conf").exists() or not self._slots_assigned()
        if fresh:
            addresses = [node.address for node in self.nodes]
            self._run_cli(
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                timeout=60,
            )
        self.wait_healthy()

    def start_node(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        command = [
            self.server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(node.port),
            "--dir",
            str(node.folder),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
        ]
        node.process = subprocess.Popen(  # noqa: S603  # our binary, fixed arguments
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + READY_WAIT
        while self.ask(node, "PING") != "PONG":
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"redis node {node.address} did not start")
            time.sleep(0.05)

    def ask(self, node: Node, *command: str, timeout: float = 5.0) -> str:
        """One command to one node through redis-cli; its raw answer, "" when it cannot."""
        try:
            done = subprocess.run(  # noqa: S603  # our binary, fixed arguments
                [self.cli, "-h", "127.0.0.1", "-p", str(node.port), *command],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    def _run_cli(self, *args: str, timeout: float) -> str:
        done = subprocess.run(  # noqa: S603  # our binary, fixed arguments
            [self.cli, *args], capture_output=True, text=True, check=False, timeout=timeout
        )
        if done.returncode != 0:
            raise ClusterError(f"redis-cli {' '.join(args[:2])} failed: {done.stdout[-800:]}")
        return done.stdout

    def info(self, node: Node) -> dict[str, str]:
        text = self.ask(node, "CLUSTER", "INFO", timeout=2.0)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def _slots_assigned(self) -> bool:
        return self.info(self.nodes[0]).get("cluster_slots_assigned") == str(SLOTS)

    def slots(self) -> dict[int, list[int]]:
        """Each primary's port (not failed) → the slots it serves, as a running node sees it."""
        for node in self.running():
            text = self.ask(node, "CLUSTER", "NODES", timeout=2.0)
            if text:
                break
        else:
            return {}
        owned: dict[int, list[int]] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
            spans = owned.setdefault(port, [])
            for span in parts[8:]:
                if span.startswith("["):  # a slot being migrated or imported
                    continue
                low, _, high = span.partition("-")
                spans.extend(range(int(low), int(high or low) + 1))
        return owned

    def primary_nodes(self) -> list[Node]:
        """The running nodes that serve slots as primaries now (after a failover, a former
        replica)."""
        ports = {port for port, slots in self.slots().items() if slots}
        return [n for n in self.running() if n.port in ports]

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def replicas_up(self) -> int:
        """How many running nodes are replicas with their link to a primary up."""
        return sum(
            "master_link_status:up" in self.ask(n, "INFO", "replication") for n in self.running()
        )

    def wait_healthy(
        self, wait: float = READY_WAIT, *, primaries: int | None = None, replicas: int | None = None
    ) -> None:
        """Until every running node says ``cluster_state:ok`` with all slots served, that many
        primaries serve slots and that many replicas are linked (by default: all); else
        ClusterError."""
        deadline = time.monotonic() + wait
        want = self.primaries if primaries is None else primaries
        linked = self.primaries * self.replicas if replicas is None else replicas
        while True:
            infos = [self.info(node) for node in self.running()]
            ok = infos and all(
                i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == str(SLOTS)
                for i in infos
            )
            if ok and len(self.primary_nodes()) >= want and self.replicas_up() >= linked:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not healthy after {wait} s: {infos}")
            time.sleep(0.1)

    def primary_for_slot(self, slot: int) -> Node:
        """The running primary serving ``slot`` now."""
        for port, slots in self.slots().items():
            if slot in slots:
                for node in self.running():
                    if node.port == port:
                        return node
        raise ClusterError(f"no running primary serves slot {slot}")

    def kill(self, node: Node) -> None:
        """SIGKILL: the node dies with whatever it had not replicated."""
        assert node.process is not None
        node.process.kill()
        node.process.wait(timeout=10)

    def freeze(self, node: Node) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)

    def thaw(self, node: Node) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGCONT)

    def reshard(self, source: Node, target: Node, slots: int) -> str:
        """Move ``slots`` slots from ``source`` to ``target`` (redis-cli's live migration)."""
        ids = [self.ask(n, "CLUSTER", "MYID") for n in (source, target)]
        self.wait_agreed()
        return self._run_cli(
            "--cluster",
            "reshard",
            self.nodes[0].address,
            "--cluster-from",
            ids[0],
            "--cluster-to",
            ids[1],
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            timeout=300,
        )

    def wait_agreed(self, wait: float = READY_WAIT) -> None:
        """Until ``redis-cli --cluster check`` finds every node agreeing on the slot map (a
        reshard refuses to start otherwise, and nodes learn a finished one by gossip)."""
        deadline = time.monotonic() + wait
        while True:
            done = subprocess.run(  # noqa: S603  # our binary, fixed arguments
                [self.cli, "--cluster", "check", self.running()[0].address],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster nodes disagree after {wait} s: {done.stdout[-400:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is None:
                continue
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=10)
            node.process = None


@contextlib.contextmanager
def local_cluster(
    folder: Path, *, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 2000
) -> Iterator[LocalCluster]:
    """A started cluster in ``folder`` on free loopback ports, stopped on exit."""
    count = primaries * (1 + replicas)
    cluster = LocalCluster(
        folder,
        free_base_port(count),
        primaries=primaries,
        replicas=replicas,
        node_timeout_ms=node_timeout_ms,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
