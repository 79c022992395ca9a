"""A local topology an operator can copy: PostgreSQL, a Redis Cluster, several ``passcode serve``
replicas and a separate ``passcode drain`` behind HAProxy (deploy/haproxy.cfg), on loopback.

    python -m loadtest.topology                      # runs until Ctrl-C, printing its URLs
    python -m loadtest.topology --locust             # Locust distributed through the balancer,
                                                     # one replica SIGKILLed mid-run, then checks

PostgreSQL is embedded (pgserver, data in ``--data-dir``) unless ``PASSCODE_DATABASE_URL`` is set;
the Redis Cluster (3 primaries + 3 replicas, :mod:`passcode.localcluster`) is made anew each run.
Migrations, the signing key, the server secret and the dev identity key are made once, before
any replica starts, so replicas never race to create them. The replicas run with the drain off;
one ``passcode drain`` process drains every stream shard, so killing a replica never strands an
acknowledged scan: it is in the Redis stream (or, on the fallback, PostgreSQL) before the 200.

``--locust`` seeds citizens and terminals, runs one Locust master and two workers (headless,
``--expect-workers 2``, the terminal scenario), kills replica 1 after ``--kill-after`` seconds,
and then checks: every scan id a 200 answered is in PostgreSQL once the drain has caught up, and
the requests answered after the balancer's detection window all succeeded. The report (CSV,
HTML, and ``topology-<time>-figures.json`` with the figures) goes to ``--results``; the exit code is 1
when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from passcode.config import Settings
from passcode.embedded import embedded_postgres
from passcode.localcluster import local_cluster
from passcode.store.keyring import load_or_create_ed25519, load_or_create_secret
from passcode.testing import free_port
from passcode.wiring import dev_idp_key_path

REPO = Path(__file__).resolve().parent.parent
PASSCODE = Path(sys.executable).with_name("passcode")
LOCUST = Path(sys.executable).with_name("locust")
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
READY_WAIT = 60.0
# HAProxy checks every 1 s and takes a replica out after 2 failures (deploy/haproxy.cfg): past
# this many seconds after the kill, every request must be routed to a live replica.
DETECTION_WINDOW = 3.0


def haproxy_binary() -> str:
    """HAProxy, installed from Debian's package when missing and apt-get may run."""
    found = shutil.which("haproxy")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise SystemExit("haproxy is not installed and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "haproxy"]):
        subprocess.run(  # fixed arguments
            [*sudo, *command], capture_output=True, check=False, env=env, timeout=600
        )
    found = shutil.which("haproxy")
    if found is None:
        raise SystemExit("apt-get install haproxy failed; install it and try again")
    return found


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of a GET, 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  # our loopback URL
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, TimeoutError):
        return 0


def wait_for(url: str, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + READY_WAIT
    while http_status(url) != 200:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready at {url} after {READY_WAIT:g} s")
        time.sleep(0.2)


@dataclass
class Process:
    """A child process with its output in a log file of the topology's folder."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # our own binaries
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 35.0) -> None:
        """SIGTERM (a replica drains its in-flight requests, the drain flushes), then SIGKILL."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class Topology:
    """The running pieces and where they answer."""

    folder: Path
    env: dict[str, str]
    lb_url: str
    stats_url: str
    replicas: list[Process] = field(default_factory=list)
    replica_urls: list[str] = field(default_factory=list)
    drain: Process | None = None
    balancer: Process | None = None

    def settings(self) -> Settings:
        return Settings.from_env({k: v for k, v in self.env.items() if k.startswith("PASSCODE_")})

    def passcode(self, *args: str) -> str:
        """One ``passcode`` command with the topology's settings; its stdout."""
        done = subprocess.run(  # our own CLI
            [str(PASSCODE), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"passcode {args[0]} failed: {done.stderr[-1500:]}")
        return done.stdout

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each replica (``api1`` → UP/DOWN…), from its stats CSV."""
        return {name: row[17] for name, row in self._server_rows().items()}

    def server_sessions(self) -> dict[str, int]:
        """Sessions HAProxy sent to each replica so far (``stot``; health checks not counted)."""
        return {name: int(row[7] or 0) for name, row in self._server_rows().items()}

    def _server_rows(self) -> dict[str, list[str]]:
        try:
            with urllib.request.urlopen(f"{self.stats_url};csv", timeout=2) as resp:  # noqa: S310  # our loopback URL
                text = resp.read().decode()
        except (OSError, TimeoutError):
            return {}
        rows = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
        return {
            r[1]: r
            for r in rows
            if len(r) > 17 and r[0] == "passcode_api" and r[1].startswith("api")
        }


def base_env(folder: Path, database_url: str, seeds: str) -> dict[str, str]:
    """Settings shared by every process: one secret and one data folder, so tokens, passes and
    seed files agree; dev mode for the dev identity provider the load scenarios use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSCODE_")}
    keep = ("PASSCODE_REDIS_WAIT_REPLICAS", "PASSCODE_LOG_LEVEL", "PASSCODE_LOG_FORMAT")
    env |= {k: os.environ[k] for k in keep if os.environ.get(k)}
    env |= {
        "PASSCODE_DATABASE_URL": database_url,
        "PASSCODE_REDIS_CLUSTER_NODES": seeds,
        "PASSCODE_REDIS_URL": f"redis://{seeds.split(',', 1)[0]}/0",
        "PASSCODE_DATA_DIR": str(folder / "passcode"),
        "PASSCODE_SECRET": load_or_create_secret(folder / "secret"),
        "PASSCODE_ADMIN_KEY": load_or_create_secret(folder / "admin-key"),
        "PASSCODE_DEV_MODE": "1",
        "PASSCODE_HOST": "127.0.0.1",
    }
    return env


@contextlib.contextmanager
def topology(
    folder: Path, *, replicas: int, lb_port: int, stats_port: int, first_port: int
) -> Iterator[Topology]:
    """Start everything (see the module docstring), yield it, stop it all on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "cluster", ignore_errors=True)  # a fresh cluster on fresh ports
    haproxy = haproxy_binary()
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("PASSCODE_DATABASE_URL") or stack.enter_context(
            embedded_postgres(folder / "pg")
        )
        cluster = stack.enter_context(local_cluster(folder / "cluster"))
        ports = [first_port + i if first_port else free_port() for i in range(replicas)]
        lb = lb_port or free_port()
        stats = stats_port or free_port()
        top = Topology(
            folder,
            base_env(folder, database_url, cluster.seeds),
            lb_url=f"http://127.0.0.1:{lb}",
            stats_url=f"http://127.0.0.1:{stats}/stats",
        )
        settings = top.settings()
        top.passcode("migrate")
        top.passcode("keys", "init")
        load_or_create_ed25519(dev_idp_key_path(settings))
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)

        def stop_all() -> None:
            for proc in [top.balancer, *top.replicas, top.drain]:
                if proc is not None:
                    proc.stop()

        stack.callback(stop_all)
        top.drain = Process("drain", [str(PASSCODE), "drain"], top.env, logs / "drain.log")
        top.drain.start()
        for number, port in enumerate(ports, start=1):
            env = top.env | {"PASSCODE_PORT": str(port), "PASSCODE_DRAIN_ENABLED": "0"}
            replica = Process(
                f"api{number}", [str(PASSCODE), "serve"], env, logs / f"api{number}.log"
            )
            replica.start()
            top.replicas.append(replica)
            top.replica_urls.append(f"http://127.0.0.1:{port}")
        for replica, url in zip(top.replicas, top.replica_urls, strict=True):
            wait_for(f"{url}/readyz", replica.name, replica.process)
        lb_env = top.env | {
            "PASSCODE_LB_BIND": f"127.0.0.1:{lb}",
            "PASSCODE_LB_STATS": f"127.0.0.1:{stats}",
        }
        lb_env |= {
            f"PASSCODE_BACKEND_{n}": url.removeprefix("http://")
            for n, url in enumerate(top.replica_urls, start=1)
        }
        top.balancer = Process(
            "haproxy", [haproxy, "-db", "-f", str(HAPROXY_CFG)], lb_env, logs / "haproxy.log"
        )
        top.balancer.start()
        wait_for(f"{top.lb_url}/readyz", "haproxy", top.balancer.process)
        deadline = time.monotonic() + READY_WAIT
        while set(top.server_states().values()) != {"UP"} and time.monotonic() < deadline:
            time.sleep(0.2)
        yield top


def print_urls(top: Topology) -> None:
    print(f"balancer   {top.lb_url}  (GET /readyz, POST /v1/verify …)")
    print(f"lb stats   {top.stats_url}")
    for replica, url in zip(top.replicas, top.replica_urls, strict=True):
        print(f"{replica.name:<10} {url}  (GET /metrics here, never through the balancer)")
    print(f"postgres   {top.env['PASSCODE_DATABASE_URL']}")
    print(f"redis      {top.env['PASSCODE_REDIS_CLUSTER_NODES']}")
    print(f"logs       {top.folder / 'logs'}; settings: PASSCODE_* in each process's environment,")
    print(f"           secret and admin key in {top.folder}/secret and {top.folder}/admin-key")


# --- the load run --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one ``--locust`` run measured; ``lost`` and ``failed_after`` must be 0."""

    command: str
    users: int
    run_time: int
    kill_after: float
    verifies: int = 0
    acknowledged: int = 0
    failed: int = 0
    failed_before_kill: int = 0
    failed_in_window: int = 0
    answered_after: int = 0
    failed_after: int = 0
    found_in_postgres: int = 0
    lost: int = 0
    killed: str = ""
    balancer_states: dict[str, str] = field(default_factory=dict)
    sessions_before_kill: dict[str, int] = field(default_factory=dict)
    locust_exit: int = 0
    report: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.acknowledged > 0
            and self.lost == 0
            and self.answered_after > 0
            and self.failed_after == 0
            and self.balancer_states.get(self.killed) not in {None, "UP"}
            and self.sessions_before_kill.get(self.killed, 0) > 0
        )


def read_scan_logs(folder: Path) -> list[tuple[float, int, str]]:
    rows = []
    for path in folder.glob("scans-*.log"):
        for line in path.read_text(encoding="ascii").splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), int(parts[1]), parts[2]))
    return rows


async def count_stored(database_url: str, scan_ids: list[str], *, wait: float) -> int:
    """How many of ``scan_ids`` are in the scan log, polling until all are or ``wait`` passes
    (the drain stores them in batches, a fraction of a second behind)."""
    wanted = [uuid.UUID(s) for s in scan_ids]
    deadline = time.monotonic() + wait
    while True:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            found = int(
                await conn.fetchval(
                    "SELECT count(DISTINCT scan_id) FROM scans WHERE scan_id = ANY($1::uuid[])",
                    wanted,
                    timeout=30,
                )
            )
        finally:
            await conn.close()
        if found >= len(wanted) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def tally(figures: Figures, rows: list[tuple[float, int, str]], killed_at: float) -> list[str]:
    """Fill in the request counts from the scan logs; the acknowledged scan ids."""
    acked = [sid for _, status, sid in rows if status == 200]
    figures.verifies = len(rows)
    figures.acknowledged = len(acked)
    figures.failed = sum(1 for _, status, _ in rows if status != 200)
    if killed_at:
        window_end = killed_at + DETECTION_WINDOW
        figures.failed_before_kill = sum(1 for t, s, _ in rows if s != 200 and t < killed_at)
        figures.failed_in_window = sum(
            1 for t, s, _ in rows if s != 200 and killed_at <= t < window_end
        )
        after = [s for t, s, _ in rows if t >= window_end]
        figures.answered_after = len(after)
        figures.failed_after = sum(1 for s in after if s != 200)
    return acked


def run_locust(top: Topology, args: argparse.Namespace) -> Figures:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    scans = top.folder / f"scans-{stamp}"
    seed_file = top.folder / f"seed-{stamp}.json"
    print(f"seeding {args.citizens} citizens and {args.terminals} terminals …", flush=True)
    top.passcode(
        "seed", "--citizens", str(args.citizens), "--terminals", str(args.terminals),
        "--out", str(seed_file),
    )  # fmt: skip
    master_port = free_port()
    env = top.env | {"LOADTEST_SCAN_LOG": str(scans)}
    common = [str(LOCUST), "-f", str(REPO / "loadtest" / "locustfile.py"), "TerminalUser"]
    prefix = results / f"topology-{stamp}"
    master_argv = [
        *common, "--master", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(master_port), "--headless", "--expect-workers", "2",
        "--host", top.lb_url, "--seed-file", str(seed_file),
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{args.run_time}s", "--stop-timeout", "5",
        "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
    ]  # fmt: skip
    worker_argv = [
        *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
    ]  # fmt: skip
    logs = top.folder / "logs"
    master = Process("locust-master", master_argv, env, logs / f"locust-master-{stamp}.log")
    workers = [
        Process(f"locust-worker{n}", worker_argv, env, logs / f"locust-worker{n}-{stamp}.log")
        for n in (1, 2)
    ]
    figures = Figures(
        command=" ".join(["python -m loadtest.topology", *sys.argv[1:]]),
        users=args.users,
        run_time=args.run_time,
        kill_after=args.kill_after,
    )
    master.start()
    for worker in workers:
        worker.start()
    started = time.time()
    victim = top.replicas[0]
    killed_at = 0.0
    try:
        print(
            f"locust: {args.users} terminals for {args.run_time} s through {top.lb_url}", flush=True
        )
        while master.alive():
            if not killed_at and time.time() - started >= args.kill_after:
                figures.sessions_before_kill = top.server_sessions()
                killed_at = time.time()
                victim.kill()
                figures.killed = victim.name
                print(f"killed {victim.name} (SIGKILL) at +{killed_at - started:.1f} s", flush=True)
            time.sleep(0.1)
        assert master.process is not None
        figures.locust_exit = master.process.returncode
    finally:
        for proc in (master, *workers):
            proc.stop(timeout=15)
    figures.balancer_states = top.server_states()
    acked = tally(figures, read_scan_logs(scans), killed_at)
    print(f"waiting for the drain to store {len(acked)} acknowledged scans …", flush=True)
    figures.found_in_postgres = asyncio.run(
        count_stored(top.env["PASSCODE_DATABASE_URL"], acked, wait=args.drain_wait)
    )
    figures.lost = figures.acknowledged - figures.found_in_postgres
    figures.report = f"{prefix}.html"
    (results / f"topology-{stamp}-figures.json").write_text(
        json.dumps(asdict(figures) | {"ok": figures.ok}, indent=2), encoding="utf-8"
    )
    return figures


def print_figures(f: Figures) -> None:
    print()
    print(f"verifies sent          {f.verifies}")
    print(f"acknowledged (200)     {f.acknowledged}")
    print(f"failed                 {f.failed}  (before the kill {f.failed_before_kill},"
          f" in the {DETECTION_WINDOW:g} s after it {f.failed_in_window})")  # fmt: skip
    print(f"answered after window  {f.answered_after}, failed {f.failed_after}")
    print(f"found in PostgreSQL    {f.found_in_postgres}")
    print(f"lost                   {f.lost}")
    print(f"balancer               {f.balancer_states}  ({f.killed} killed)")
    print(f"sessions before kill   {f.sessions_before_kill}")
    print(f"report                 {f.report}")
    print("OK" if f.ok else "FAILED")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.topology", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data-dir", default=".data/topology", help="where everything keeps its data and logs"
    )
    p.add_argument("--replicas", type=int, default=2, help="passcode serve processes (2-6)")
    p.add_argument("--port", type=int, default=8080, help="the balancer's port (0: a free one)")
    p.add_argument("--stats-port", type=int, default=8404, help="HAProxy's stats page (0: free)")
    p.add_argument(
        "--first-replica-port",
        type=int,
        default=8081,
        help="replica n on this + n-1 (0: free ports)",
    )
    p.add_argument("--locust", action="store_true", help="run the load test with a kill, then exit")
    p.add_argument("--users", type=int, default=100, help="Locust terminal users")
    p.add_argument("--spawn-rate", type=float, default=50)
    p.add_argument("--run-time", type=int, default=60, help="seconds of load")
    p.add_argument(
        "--kill-after", type=float, default=20, help="seconds into the run to SIGKILL api1"
    )
    p.add_argument("--citizens", type=int, default=20_000)
    p.add_argument(
        "--terminals", type=int, default=200, help="at least --users (rate limit per terminal)"
    )
    p.add_argument(
        "--drain-wait", type=float, default=60, help="seconds to wait for the drain to catch up"
    )
    p.add_argument("--results", default=str(REPO / "loadtest" / "results"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 2 <= args.replicas <= 6:
        raise SystemExit("--replicas: 2 to 6 (deploy/haproxy.cfg has six backend slots)")
    folder = Path(args.data_dir).resolve()
    with topology(
        folder,
        replicas=args.replicas,
        lb_port=args.port,
        stats_port=args.stats_port,
        first_port=args.first_replica_port,
    ) as top:
        print_urls(top)
        if args.locust:
            figures = run_locust(top, args)
            print_figures(figures)
            return 0 if figures.ok else 1
        print("running; Ctrl-C stops everything", flush=True)
        stopped = False

        def stop(_signum: int, _frame: object) -> None:
            nonlocal stopped
            stopped = True

        # Handlers of our own: a shell's background job inherits SIGINT ignored, and Python then
        # raises no KeyboardInterrupt.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopped:
            for proc in (top.balancer, top.drain, *top.replicas):
                if proc is not None and not proc.alive():
                    print(f"{proc.name} exited; see {proc.log}", flush=True)
                    return 1
            time.sleep(0.5)
        print("stopping …", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
