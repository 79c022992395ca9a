"""The local topology (loadtest/topology.py) under a short Locust run: two ``passcode serve``
replicas and a separate drain behind HAProxy, on a Redis Cluster of 3+3 and a database of the
test's own; Locust's master and two workers send terminal scans through the balancer, and one
replica is SIGKILLed mid-run.

It proves two promises of a replicated deployment: a replica dying loses no acknowledged scan
(every scan id a 200 answered is in PostgreSQL once the drain catches up), and the balancer
routes around it (it had served requests before, HAProxy marks it down, and every request
answered after the detection window succeeded). ``make topology-load`` is the long form.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.throwaway import create_database, drop_database, with_database
from loadtest.topology import haproxy_binary

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUN_SECONDS = int(os.environ.get("TOPOLOGY_TEST_SECONDS", "15"))


def test_a_replica_killed_under_load_loses_no_acknowledged_scan_and_is_routed_around(
    base_database_url: str, tmp_path: Path
) -> None:
    try:
        haproxy_binary()
    except SystemExit as exc:
        pytest.skip(str(exc))
    name = asyncio.run(create_database(base_database_url, "topology"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSCODE_")}
    env["PASSCODE_DATABASE_URL"] = with_database(base_database_url, name)
    results = tmp_path / "results"
    argv = [
        sys.executable, "-m", "loadtest.topology", "--locust",
        "--data-dir", str(tmp_path / "topology"), "--results", str(results),
        "--port", "0", "--stats-port", "0", "--first-replica-port", "0",
        "--users", "16", "--spawn-rate", "16", "--run-time", str(RUN_SECONDS),
        "--kill-after", str(RUN_SECONDS * 0.4), "--citizens", "300", "--terminals", "32",
        "--drain-wait", "30",
    ]  # fmt: skip
    try:
        done = subprocess.run(  # noqa: S603  # our own module
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
        )
    finally:
        asyncio.run(drop_database(base_database_url, name))
    print(done.stdout[-3000:])
    reports = sorted(results.glob("topology-*-figures.json"))
    assert reports, f"no figures written (exit {done.returncode}): {done.stderr[-3000:]}"
    figures = json.loads(reports[-1].read_text())
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0, figures
    assert figures["found_in_postgres"] == figures["acknowledged"]
    assert figures["killed"] == "api1"
    assert figures["sessions_before_kill"]["api1"] > 0, "api1 served nothing before the kill"
    assert figures["balancer_states"]["api1"] != "UP"
    assert figures["balancer_states"]["api2"] == "UP"
    assert figures["answered_after"] > 0
    assert figures["failed_after"] == 0, figures
    assert list(results.glob("topology-*.html")), "no Locust HTML report"
    assert list(results.glob("topology-*_stats.csv")), "no Locust CSV report"
    assert done.returncode == 0, done.stderr[-3000:]
