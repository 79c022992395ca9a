"""deploy/k8s, rendered offline: schema-valid, and consistent with the code it deploys (probes on
real routes, a grace period that covers the SIGTERM drain, real settings, secrets from Secrets,
non-root on a read-only root filesystem, policies that select the right pods)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from passcode import app as app_module
from passcode import cli, config, serving
from passcode.api.routes import ROUTES
from passcode.config import Settings
from passcode.domain.identity import load_jwks
from passcode.store import keyring
from tests.deploy.conftest import BASE, DEPLOY, OVERLAY
from tests.deploy.kustomize import Resource, render

SCHEMA_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SECRET_SETTINGS = frozenset(
    f"PASSCODE_{f.name.upper()}"
    for f in dataclasses.fields(Settings)
    if not f.repr and f.name not in config._NOT_FROM_ENV
)


def _key(resource: Resource) -> tuple[str, str, str]:
    return (
        resource["kind"],
        resource["metadata"].get("namespace", ""),
        resource["metadata"]["name"],
    )


def _one(resources: list[Resource], kind: str, name: str) -> Resource:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _containers(resources: list[Resource]) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for resource in resources:
        if resource["kind"] == "Deployment":
            for container in resource["spec"]["template"]["spec"]["containers"]:
                yield resource, container


def _environment(resources: list[Resource], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container starts with; a Secret's value stands in as a placeholder."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_one(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"postgresql://u:p@db/{ref['key']}"
    return env


def _flush_bound(function: Any) -> float:
    """The seconds of the ``async with asyncio.timeout(N)`` whose body calls ``drain_all``."""
    tree = ast.parse(inspect.getsource(function).lstrip())
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith) and any(
            isinstance(n, ast.Attribute) and n.attr == "drain_all" for n in ast.walk(node)
        ):
            (item,) = node.items
            call = item.context_expr
            assert isinstance(call, ast.Call)
            assert isinstance(call.args[0], ast.Constant)
            return float(call.args[0].value)
    raise AssertionError(f"no bounded drain_all in {function.__qualname__}")


def test_python_renderer_matches_kubectl_kustomize() -> None:
    """The tests' own renderer builds exactly what kustomize builds (where kubectl is here)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: only the tests' own renderer was used")
    for folder in (BASE, OVERLAY):
        built = subprocess.run(  # noqa: S603  # fixed arguments
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
        ).stdout
        theirs = {_key(r): r for r in yaml.safe_load_all(built) if r}
        ours = {_key(r): r for r in render(folder)}
        assert ours == theirs, folder


def test_overlay_changes_what_it_says(
    base_manifests: list[Resource], overlay_manifests: list[Resource]
) -> None:
    """The example overlay sets its namespace, image, autoscaling range and data namespace."""
    assert {r["metadata"].get("namespace") for r in base_manifests} == {None}
    assert {r["metadata"]["namespace"] for r in overlay_manifests} == {"passcode"}
    images = {c["image"] for _, c in _containers(overlay_manifests)}
    assert images == {"registry.city.example/passcode:0.1.0"}
    hpa = _one(overlay_manifests, "HorizontalPodAutoscaler", "passcode-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 40)
    for policy in (r for r in overlay_manifests if r["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"]
        assert selector == {"kubernetes.io/metadata.name": "city-data"}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_manifests_are_valid_kubernetes_objects(folder: Path, version: str) -> None:
    """Every rendered object validates (strict: no unknown fields) against the schemas."""
    for resource in render(folder):
        kubernetes_validate.validate(resource, version, strict=True)


def test_a_wrong_field_fails_schema_validation(base_manifests: list[Resource]) -> None:
    """The schema check can fail: a misspelt probe field is rejected in strict mode."""
    broken = copy.deepcopy(_one(base_manifests, "Deployment", "passcode-api"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


def test_probes_hit_routes_that_exist(overlay_manifests: list[Resource]) -> None:
    """Readiness is GET /readyz, liveness and start-up GET /healthz, on the serving port."""
    routes = {(r.method, r.path) for r in ROUTES}
    api = _one(overlay_manifests, "Deployment", "passcode-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _environment(overlay_manifests, container)
    assert ports == {"http": int(env["PASSCODE_PORT"])}
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ("GET", path) in routes
        assert get["port"] in ports


def test_grace_periods_cover_the_sigterm_drain(overlay_manifests: list[Resource]) -> None:
    """API: preStop + answering open connections + requests in flight + the scan flush fit in
    terminationGracePeriodSeconds; drain: its final flush does. Bounds are read from the code."""
    api = _one(overlay_manifests, "Deployment", "passcode-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = (
        float(pre_stop[1])
        + serving.GRACE
        + serving.SHUTDOWN_TIMEOUT
        + _flush_bound(app_module._drain)
    )
    assert api["terminationGracePeriodSeconds"] >= needed
    drain = _one(overlay_manifests, "Deployment", "passcode-drain")["spec"]["template"]["spec"]
    assert drain["terminationGracePeriodSeconds"] >= _flush_bound(cli.cmd_drain)


def test_every_variable_is_a_setting_that_parses(overlay_manifests: list[Resource]) -> None:
    """Each container's environment is accepted by Settings.from_env (unknown PASSCODE_* names
    and unparsable values are errors there), and names nothing but PASSCODE_* settings."""
    for _, container in _containers(overlay_manifests):
        env = _environment(overlay_manifests, container)
        assert all(name.startswith("PASSCODE_") for name in env), container["name"]
        Settings.from_env(env)


def test_secrets_come_only_from_secret_references(overlay_manifests: list[Resource]) -> None:
    """Settings that hold secrets (hidden from repr) are set only by secretKeyRef, never in a
    ConfigMap or a plain value; the API gets its database URL and server secret that way."""
    for resource in overlay_manifests:
        if resource["kind"] == "ConfigMap":
            assert not SECRET_SETTINGS & set(resource["data"]), resource["metadata"]["name"]
    for deployment, container in _containers(overlay_manifests):
        by_name = {item["name"]: item for item in container.get("env", [])}
        for name in SECRET_SETTINGS & set(by_name):
            assert "secretKeyRef" in by_name[name].get("valueFrom", {}), name
        if deployment["metadata"]["name"] == "passcode-api":
            assert {"PASSCODE_DATABASE_URL", "PASSCODE_SECRET"} <= set(by_name)


def test_pods_run_as_the_image_user_on_a_read_only_root(overlay_manifests: list[Resource]) -> None:
    """Non-root (the Dockerfile's uid), no privilege escalation, no capabilities, a read-only
    root filesystem with /tmp and PASSCODE_DATA_DIR mounted writable."""
    dockerfile_uid = _dockerfile_uid()
    for deployment, container in _containers(overlay_manifests):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == dockerfile_uid != 0
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        env = _environment(overlay_manifests, container)
        assert {"/tmp", env["PASSCODE_DATA_DIR"]} <= writable  # noqa: S108  # the mount itself
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]


def _dockerfile_uid() -> int:
    users = [
        line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]  # fmt: skip
    return int(users[-1].split(":")[0])


def test_api_mounts_where_the_settings_look(overlay_manifests: list[Resource]) -> None:
    """The signing-key Secret is mounted where the keyring reads (PASSCODE_KEYS_DIR/signing)
    and the identity provider's JWK Set at PASSCODE_IDP_JWKS_FILE, and that set loads."""
    api = _one(overlay_manifests, "Deployment", "passcode-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    env = _environment(overlay_manifests, container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in api["volumes"]}
    keys = mounts["signing-keys"]
    assert Path(keys["mountPath"]) == keyring._folder(Path(env["PASSCODE_KEYS_DIR"]))
    assert keys["readOnly"]
    assert "secret" in volumes["signing-keys"]
    jwks_file = Path(env["PASSCODE_IDP_JWKS_FILE"])
    assert Path(mounts["idp-jwks"]["mountPath"]) == jwks_file.parent
    config_map = _one(overlay_manifests, "ConfigMap", volumes["idp-jwks"]["configMap"]["name"])
    assert load_jwks(config_map["data"][jwks_file.name])


def test_autoscaler_budget_and_service_aim_at_the_api(overlay_manifests: list[Resource]) -> None:
    """The HPA scales the API Deployment (which leaves replicas to it), the PDB keeps all but
    one of its minimum, the Service selects its pods on the container's named port."""
    api = _one(overlay_manifests, "Deployment", "passcode-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in api["spec"]
    hpa = _one(overlay_manifests, "HorizontalPodAutoscaler", "passcode-api")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "passcode-api",
    }
    assert hpa["minReplicas"] >= 2
    pdb = _one(overlay_manifests, "PodDisruptionBudget", "passcode-api")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] < hpa["minReplicas"]
    service = _one(overlay_manifests, "Service", "passcode-api")["spec"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] in {
        p["name"] for p in api["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    drain = _one(overlay_manifests, "Deployment", "passcode-drain")
    assert (
        not service["selector"].items() <= drain["spec"]["template"]["metadata"]["labels"].items()
    )


def test_network_policies_allow_only_what_is_needed(overlay_manifests: list[Resource]) -> None:
    """API: in only from the ingress and monitoring namespaces on its port; drain: nothing in.
    Both: out only to PostgreSQL, the Redis nodes' client ports (from the cluster seeds) and DNS;
    the API also to HTTPS (the identity provider's discovery document and keys), the drain not."""
    config_map = _one(overlay_manifests, "ConfigMap", "passcode-config")["data"]
    redis_ports = {
        int(n.rsplit(":", 1)[1]) for n in config_map["PASSCODE_REDIS_CLUSTER_NODES"].split(",")
    }
    for name in ("passcode-api", "passcode-drain"):
        policy = _one(overlay_manifests, "NetworkPolicy", name)["spec"]
        pods = _one(overlay_manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= pods.items()
        assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
        egress = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
        https = {("TCP", 443)} if name == "passcode-api" else set()
        assert egress == {("TCP", 5432), ("UDP", 53), ("TCP", 53)} | https | {
            ("TCP", p) for p in redis_ports
        }
    api = _one(overlay_manifests, "NetworkPolicy", "passcode-api")["spec"]
    sources = set()
    for rule in api["ingress"]:
        assert [p["port"] for p in rule["ports"]] == ["http"]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}
            sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert sources == {"ingress-nginx", "monitoring"}
    assert _one(overlay_manifests, "NetworkPolicy", "passcode-drain")["spec"]["ingress"] == []
