"""What the deployment tests share: the deploy/ folder, the rendered Kubernetes manifests and
the HAProxy binary (installed from Debian's package when missing and apt-get may run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.kustomize import Resource, render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"


@pytest.fixture(scope="session")
def base_manifests() -> list[Resource]:
    return render(BASE)


@pytest.fixture(scope="session")
def overlay_manifests() -> list[Resource]:
    return render(OVERLAY)


def _install_haproxy() -> str | None:
    apt = shutil.which("apt-get")
    if apt is None:
        return None
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "haproxy"]):
        subprocess.run(  # noqa: S603  # fixed arguments
            [*sudo, *command], capture_output=True, check=False, env=env, timeout=600
        )
    return shutil.which("haproxy")


@pytest.fixture(scope="session")
def haproxy() -> str:
    """The haproxy binary; the tests that need it are skipped, saying why, without one."""
    found = shutil.which("haproxy") or _install_haproxy()
    if found is None:
        pytest.skip("haproxy is not installed and apt-get could not install it")
    return found
