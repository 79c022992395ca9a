"""What the replica wait costs on a Redis Cluster: verify requests/s with ``WAIT 1`` and without.

Starts a 3+3 Redis Cluster (passcode/localcluster.py), a throwaway database on
``PASSCODE_DATABASE_URL`` (this machine's PostgreSQL by default) and two ``passcode serve``
processes on it, one with ``PASSCODE_REDIS_WAIT_REPLICAS=1`` (the cluster default) and one with
``0``, each seeded with citizens and a terminal through the API (tests/chaos/harness.py). Then
wrk (one thread, ``--connections``) posts verifies with unique scan ids to each in turn, the
two alternating for ``--rounds`` rounds so that other load on the machine falls on both; the
service is pinned to the first CPU, wrk to the second. Prints req/s and p99 per round and the
median ratios, of
requests/s and of the service's CPU time per verify (less moved by other load).

    python -m loadtest.wait_cost [--duration 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

from loadtest.throwaway import create_database, drop_database, with_database
from passcode.localcluster import LocalCluster, local_cluster
from tests.chaos.harness import Service, seed

HERE = Path(__file__).resolve().parent
SCANS = 400_000  # unique scan ids per service: more than a run sends


class WaitService(Service):
    """The chaos harness's service on the cluster, the replica wait as given, pinned."""

    def __init__(self, folder: Path, database_url: str, cluster: LocalCluster, wait: int) -> None:
        super().__init__(folder, database_url=database_url, redis_url="redis://unused/0")
        self.cluster, self.wait_replicas = cluster, wait

    def environ(self) -> dict[str, str]:
        env = super().environ()
        env.update({
            "PASSCODE_REDIS_URL": f"redis://{self.cluster.nodes[0].address}/0",
            "PASSCODE_REDIS_CLUSTER_NODES": self.cluster.seeds,
            "PASSCODE_REDIS_PREFIX": f"wait{self.wait_replicas}-{uuid.uuid4().hex[:6]}",
            "PASSCODE_REDIS_WAIT_REPLICAS": str(self.wait_replicas),
            "PASSCODE_SCAN_SHARDS": "12",
            "PASSCODE_DRAIN_INTERVAL": "0.2",
            "PASSCODE_REDIS_TIMEOUT": "2",
        })  # fmt: skip
        return env

    def start(self) -> None:
        super().start()
        assert self.process is not None
        pin = ["taskset", "-a", "-p", "-c", "0", str(self.process.pid)]
        subprocess.run(pin, check=False, stdout=subprocess.DEVNULL)


def bodies(folder: Path, codes: list[str]) -> Path:
    path = folder / "bodies.jsonl"
    with path.open("w") as out:
        for n in range(SCANS):
            out.write(json.dumps({"code": codes[n % len(codes)], "scan_id": str(uuid.uuid4())}))
            out.write("\n")
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (the service is one process), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, key: str, data: Path, *, duration: int, connections: int) -> dict[str, float]:
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    argv += ["--latency", "-s", str(HERE / "wrk" / "post_bodies.lua")]
    argv += ["-H", f"Authorization: Bearer {key}", url, "--", str(data)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON "))
    data_ = json.loads(line.removeprefix("BENCH-JSON "))
    seconds = data_["duration_us"] / 1e6
    return {
        "requests": data_["requests"],
        "rps": data_["requests"] / seconds,
        "p99_ms": data_["latency_us"]["p99"] / 1000,
        "non_2xx": data_["errors"]["status"],
    }


async def main(args: argparse.Namespace) -> None:
    base = os.environ.get("PASSCODE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = await create_database(base, "waitcost")
    folder = Path(tempfile.mkdtemp(prefix="passcode-wait-cost-"))
    try:
        with local_cluster(folder / "cluster") as cluster:
            services = {
                wait: WaitService(folder / f"s{wait}", with_database(base, name), cluster, wait)
                for wait in (1, 0)
            }
            runs: dict[int, list[dict[str, float]]] = {1: [], 0: []}
            try:
                loads = {}
                for wait, service in services.items():
                    await asyncio.to_thread(service.start)
                    seeded = await seed(service)
                    loads[wait] = (seeded.terminal_key, bodies(service.folder, seeded.green_codes))
                for _ in range(args.rounds):
                    for wait, service in services.items():
                        key, data = loads[wait]
                        assert service.process is not None
                        cpu = cpu_seconds(service.process.pid)
                        run = await asyncio.to_thread(
                            wrk, f"{service.base}/v1/verify", key, data,
                            duration=args.duration, connections=args.connections,
                        )  # fmt: skip
                        cpu = cpu_seconds(service.process.pid) - cpu
                        run["cpu_us"] = cpu / max(run["requests"], 1) * 1e6
                        runs[wait].append(run)
                        print(f"WAIT {wait}: {run['rps']:8.0f} req/s  p99 {run['p99_ms']:6.1f} ms"
                              f"  server CPU {run['cpu_us']:5.0f} µs/verify"
                              f"  non-2xx {run['non_2xx']:.0f}", flush=True)  # fmt: skip
            finally:
                for service in services.values():
                    await asyncio.to_thread(service.stop)
    finally:
        await drop_database(base, name)
    ratios = [on["rps"] / off["rps"] for on, off in zip(runs[1], runs[0], strict=True)]
    on = statistics.median(r["rps"] for r in runs[1])
    off = statistics.median(r["rps"] for r in runs[0])
    cpu = [on["cpu_us"] / off["cpu_us"] for on, off in zip(runs[1], runs[0], strict=True)]
    print(f"median WAIT 1 {on:.0f} req/s, WAIT 0 {off:.0f} req/s;"
          f" WAIT 1 / WAIT 0 req/s per round {[round(r, 3) for r in ratios]},"
          f" median {statistics.median(ratios):.3f}; server CPU per verify WAIT 1 / WAIT 0"
          f" per round {[round(r, 3) for r in cpu]}, median {statistics.median(cpu):.3f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
