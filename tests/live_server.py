"""A real ``passcode serve`` process on a free loopback port, for tests that need the real thing:
the CLI's logging set-up and access log, a real socket for schemathesis' HTTP client.

It uses the run's test database and a Redis prefix of its own; its stderr (where the CLI logs)
goes to a file the test can read after ``stop()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passcode.config import Settings
from passcode.testing import free_port
from tests.helpers import ADMIN_KEY, RUN_ID, cluster_nodes

PASSCODE = Path(sys.executable).with_name("passcode")


def live_settings(
    database_url: str, redis_url: str, redis_prefix: str, folder: Path, *, tag: str, **more: Any
) -> Settings:
    """Settings for one test's server: the run's database, a Redis prefix and a secret of its
    own (``tag`` names them), dev mode, the run's bootstrap admin key, a free port, a small
    pool and two scan shards; ``more`` overrides or adds settings."""
    suffix = uuid.uuid4().hex
    chosen: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_cluster_nodes": cluster_nodes(),
        "redis_prefix": f"{redis_prefix}:{tag}{suffix[:6]}",
        "data_dir": folder,
        "secret": f"{tag}-test-secret-{suffix}",
        "admin_key": ADMIN_KEY + RUN_ID,
        "dev_mode": True,
        "port": free_port(),
        "pg_pool_min": 1,
        "pg_pool_max": 3,
        "scan_shards": 2,
    }
    return Settings(**(chosen | more))


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes ``Settings.from_env`` equal ``settings`` (+ extra)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSCODE_")}
    assert settings.database_url is not None
    assert settings.redis_url is not None
    assert settings.secret is not None
    assert settings.admin_key is not None
    env |= {
        "PASSCODE_DATABASE_URL": settings.database_url,
        "PASSCODE_REDIS_URL": settings.redis_url,
        "PASSCODE_REDIS_CLUSTER_NODES": ",".join(settings.redis_cluster_nodes),
        "PASSCODE_REDIS_PREFIX": settings.redis_prefix,
        "PASSCODE_DATA_DIR": str(settings.data_dir),
        "PASSCODE_SECRET": settings.secret,
        "PASSCODE_ADMIN_KEY": settings.admin_key,
        "PASSCODE_DEV_MODE": "1" if settings.dev_mode else "0",
        "PASSCODE_HOST": settings.host,
        "PASSCODE_PORT": str(settings.port),
        "PASSCODE_SCAN_SHARDS": str(settings.scan_shards),
        "PASSCODE_DRAIN_INTERVAL": str(settings.drain_interval),
        "PASSCODE_PG_POOL_MIN": str(settings.pg_pool_min),
        "PASSCODE_PG_POOL_MAX": str(settings.pg_pool_max),
    }
    return env | extra


@dataclass
class LiveServer:
    settings: Settings
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # more arguments of `passcode serve` (e.g. --workers 2)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603  # our own CLI, fixed argv
                [str(PASSCODE), "serve", *self.args],
                env=settings_env(self.settings, **self.extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"passcode serve exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"passcode serve did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> int | None:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
