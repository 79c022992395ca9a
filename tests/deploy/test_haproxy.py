"""deploy/haproxy.cfg: valid for `haproxy -c` with the variables it documents, invalid without
a required one, and, run for real, sending requests only to replicas whose /readyz is 200."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

CONFIG = DEPLOY / "haproxy.cfg"
SETTLE = 15.0  # s: deadline for health checks (inter 1 s, fall/rise 2) to change a server's state


def _check(haproxy: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # fixed arguments
        [haproxy, "-c", "-f", str(CONFIG)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_config_is_valid_with_two_replicas(haproxy: str) -> None:
    """The minimum the header documents: where to listen and two replicas."""
    done = _check(
        haproxy,
        {
            "PASSCODE_LB_BIND": "127.0.0.1:18080",
            "PASSCODE_BACKEND_1": "127.0.0.1:18081",
            "PASSCODE_BACKEND_2": "127.0.0.1:18082",
        },
    )
    assert done.returncode == 0, done.stderr


def test_config_is_valid_with_more_replicas_and_stats(haproxy: str) -> None:
    """The optional replicas 3 to 6 and the stats listener."""
    env = {"PASSCODE_LB_BIND": "127.0.0.1:18080", "PASSCODE_LB_STATS": "127.0.0.1:18090"}
    env |= {f"PASSCODE_BACKEND_{n}": f"127.0.0.1:{18080 + n}" for n in range(1, 7)}
    done = _check(haproxy, env)
    assert done.returncode == 0, done.stderr


def test_config_is_refused_without_a_required_replica(haproxy: str) -> None:
    """With PASSCODE_BACKEND_2 unset the server line has no address: haproxy -c fails."""
    env = {
        "PASSCODE_LB_BIND": "127.0.0.1:18080",
        "PASSCODE_BACKEND_1": "127.0.0.1:18081",
        "PASSCODE_BACKEND_2": "",
    }
    done = _check(haproxy, env)
    assert done.returncode != 0


class _Replica(BaseHTTPRequestHandler):
    """A stand-in replica: /readyz answers the server's ``ready`` status, / says who it is."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _ReplicaServer)
        if self.path == "/readyz":
            code, body = (200 if server.ready else 503), b"{}"
        else:
            code, body = 200, server.name.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads who answered, not the access log."""


class _ReplicaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Replica)
        self.name = name
        self.ready = True


@pytest.fixture
def replicas() -> Iterator[tuple[_ReplicaServer, _ReplicaServer]]:
    servers = (_ReplicaServer("one"), _ReplicaServer("two"))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str, count: int) -> set[str]:
    seen = set()
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # loopback http
            seen.add(response.read().decode())
    return seen


def _until(url: str, expected: set[str]) -> set[str]:
    """Who answers, once it is ``expected`` for 20 requests in a row (or the deadline passes)."""
    deadline = time.monotonic() + SETTLE
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = _answers(url, 20)
        except OSError:
            seen = set()
        if seen == expected:
            return seen
        time.sleep(0.2)
    return seen


def test_balancer_routes_only_to_ready_replicas_and_hides_metrics(
    haproxy: str, replicas: tuple[_ReplicaServer, _ReplicaServer], tmp_path: Path
) -> None:
    """A replica whose /readyz turns 503 leaves the rotation and comes back once it is 200;
    /metrics, which the replicas would answer, is not served to the balancer's clients."""
    one, two = replicas
    port = _free_port()
    env = {
        **os.environ,
        "PASSCODE_LB_BIND": f"127.0.0.1:{port}",
        "PASSCODE_BACKEND_1": f"127.0.0.1:{one.server_address[1]}",
        "PASSCODE_BACKEND_2": f"127.0.0.1:{two.server_address[1]}",
    }
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  # fixed arguments
            [haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        for ready, expected in ((True, {"one", "two"}), (False, {"one"}), (True, {"one", "two"})):
            two.ready = ready
            assert _until(url, expected) == expected, log.read_text()[-2000:]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "metrics", timeout=5)  # noqa: S310  # loopback http
        denied.value.close()
        assert denied.value.code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
