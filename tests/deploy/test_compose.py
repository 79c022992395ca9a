"""deploy/compose.yaml, checked without docker: its services, the settings it gives passcode
(each accepted by Settings.from_env), the Redis Cluster it forms and the balancer in front."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from passcode.config import Settings
from tests.deploy.conftest import DEPLOY

PASSCODE = ("init", "api-1", "api-2", "drain")
REDIS = tuple(f"redis-{n}" for n in range(1, 7))
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: ``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?m}``, ``${V?m}``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, word = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        unset = value is None or (operator is not None and operator.startswith(":") and not value)
        if operator is None or not unset:
            return value or ""
        if operator.endswith("?"):
            raise MissingVariable(f"{name}: {word}")
        return word

    return _VARIABLE.sub(one, text)


def load(env: dict[str, str]) -> dict[str, Any]:
    """The compose file as docker compose would see it with ``env`` (anchors and merges too)."""
    document = yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), env))
    assert isinstance(document, dict)
    return document


@pytest.fixture
def compose() -> dict[str, Any]:
    return load({"PASSCODE_SECRET": "s" * 43})


def test_the_server_secret_must_be_given() -> None:
    """Without PASSCODE_SECRET the file does not resolve (no replica starts with a blank one)."""
    with pytest.raises(MissingVariable, match="PASSCODE_SECRET"):
        load({})


def test_topology_has_every_service_and_dependencies_exist(compose: dict[str, Any]) -> None:
    """PostgreSQL, six Redis nodes and the one-shot cluster creation, migrations, two API
    replicas, a drain and HAProxy; every depends_on names a service of the file."""
    services = compose["services"]
    assert set(services) == {"postgres", *REDIS, "redis-cluster", *PASSCODE, "haproxy"}
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
    for name in ("api-1", "api-2", "drain"):
        assert services[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }


def test_passcode_services_get_settings_that_parse(compose: dict[str, Any]) -> None:
    """Each passcode container's environment is accepted by Settings.from_env and points at
    the file's own PostgreSQL and Redis nodes; the API replicas leave draining to `drain`."""
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    for name in PASSCODE:
        service = services[name]
        settings = Settings.from_env(service["environment"])
        assert settings.database_url == (
            f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{postgres['POSTGRES_DB']}"
        )
        hosts = {node.rsplit(":", 1)[0] for node in settings.redis_cluster_nodes}
        ports = {node.rsplit(":", 1)[1] for node in settings.redis_cluster_nodes}
        assert hosts <= set(REDIS)
        assert ports == {"6379"}
        assert settings.drain_enabled is False
        assert service["read_only"] is True
        assert service["tmpfs"] == ["/tmp"]  # noqa: S108  # the mount itself
        assert f"keys:{settings.key_dir}" in service["volumes"]
        assert service["image"] == "passcode:local"
    assert services["drain"]["command"] == ["drain"]
    assert services["api-1"]["command"] == services["api-2"]["command"] == ["serve"]


def test_redis_nodes_form_a_durable_cluster(compose: dict[str, Any]) -> None:
    """Six cluster-enabled nodes with AOF fsynced before each reply, joined one replica per
    primary by the one-shot service, which waits for all six."""
    services = compose["services"]
    for name in REDIS:
        args = services[name]["command"]
        flags = dict(zip(args[1::2], args[2::2], strict=True))
        assert flags["--cluster-enabled"] == "yes"
        assert flags["--appendonly"] == "yes"
        assert flags["--appendfsync"] == "always"
        assert flags["--port"] == "6379"
    create = services["redis-cluster"]
    (script,) = create["command"]
    assert "--cluster-replicas 1" in script
    assert "for n in 1 2 3 4 5 6" in script
    assert set(create["depends_on"]) == set(REDIS)


def test_balancer_fronts_both_replicas(compose: dict[str, Any]) -> None:
    """HAProxy loads deploy/haproxy.cfg with one backend per API replica on its port, and is
    the only service published on the host."""
    services = compose["services"]
    haproxy = services["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    port = Settings.from_env(services["api-1"]["environment"]).port
    backends = {v for k, v in haproxy["environment"].items() if k.startswith("PASSCODE_BACKEND_")}
    assert backends == {f"api-1:{port}", f"api-2:{port}"}
    published = [name for name, service in services.items() if "ports" in service]
    assert published == ["haproxy"]
    config = (DEPLOY / "haproxy.cfg").read_text()
    for variable in haproxy["environment"]:
        assert "${" + variable + "}" in config, variable
