"""A renderer for the small part of kustomize that deploy/k8s uses, so the tests need no binary.

Supported, and nothing else (anything more in a kustomization is an error, not a silent skip):
``resources`` (files and folders with their own kustomization), ``namespace`` (set on every
resource, all of which must be namespaced kinds), ``images`` (``name`` to ``newName``/``newTag``
in pod templates' containers) and ``patches`` whose file is a JSON 6902 list of ``add``,
``replace`` and ``remove`` operations, aimed by ``target`` ``kind`` and optional ``name``.
Where ``kubectl kustomize`` exists, a test compares this renderer's output with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_KEYS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
_NAMESPACED = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    }
)


class Unsupported(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def load_documents(path: Path) -> list[Resource]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def render(folder: Path) -> list[Resource]:
    """The resources a kustomization folder builds, like ``kustomize build folder``."""
    spec = load_documents(folder / "kustomization.yaml")[0]
    extra = set(spec) - _KEYS
    if extra:
        raise Unsupported(f"{folder}: kustomization keys {sorted(extra)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        resources.extend(render(path) if path.is_dir() else load_documents(path))
    for patch in spec.get("patches", []):
        _apply_patch(folder, patch, resources)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in _NAMESPACED:
                raise Unsupported(f"namespace on a {resource['kind']}")
            resource["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        _set_image(image, resources)
    return resources


def _apply_patch(folder: Path, patch: dict[str, Any], resources: list[Resource]) -> None:
    if set(patch) - {"path", "target"} or set(patch["target"]) - {"kind", "name"}:
        raise Unsupported(f"patch {patch}")
    operations = load_documents(folder / patch["path"])[0]
    if not isinstance(operations, list):
        raise Unsupported(f"{patch['path']}: only JSON 6902 patches (a list of operations)")
    target = patch["target"]
    matched = [
        r
        for r in resources
        if r["kind"] == target["kind"]
        and ("name" not in target or r["metadata"]["name"] == target["name"])
    ]
    if not matched:
        raise ValueError(f"patch {patch['path']} matches no resource")
    for resource in matched:
        for operation in operations:
            json_patch(resource, operation)


def json_patch(document: Any, operation: dict[str, Any]) -> None:
    """One RFC 6902 ``add``, ``replace`` or ``remove`` applied in place."""
    op, path = operation["op"], operation["path"]
    if op not in {"add", "replace", "remove"}:
        raise Unsupported(f"JSON patch op {op!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
    parent = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, operation["value"])
        elif op == "replace":
            parent[index] = operation["value"]
        else:
            del parent[index]
        return
    if op != "add" and last not in parent:
        raise KeyError(f"{path}: no such member to {op}")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = operation["value"]


def _set_image(image: dict[str, str], resources: list[Resource]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"image {image}")
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            name, tag = _split_image(container["image"])
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _split_image(reference: str) -> tuple[str, str]:
    """(name, tag) of ``name[:tag]``; a registry's ``host:port/`` is part of the name."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, ""
