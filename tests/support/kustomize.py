"""Render deploy/k8s's kustomizations without kustomize, and with it where ``kubectl kustomize`` is installed.

Debian 12's kubectl (package kubernetes-client, 1.20) carries kustomize 2.0, which predates the ``patches`` field, so
CI cannot count on a kustomize. This renders the subset of kustomize the manifests use (``resources``, strategic
merge ``patches``, ``images``) and refuses any other field, so a kustomization that outgrows it fails loudly rather
than rendering wrong. tests/test_k8s.py checks that kubectl's rendering, where there is one, is the same.

Example:
    >>> merge({"a": {"b": 1}, "env": [{"name": "X"}, {"name": "Y"}]}, {"a": {"c": 2}, "env": [{"name": "Y", "v": 2}]})
    {'a': {'b': 1, 'c': 2}, 'env': [{'name': 'Y', 'v': 2}, {'name': 'X'}]}
    >>> set_image("registry:5000/streamsrv:cpu", {"name": "registry:5000/streamsrv", "newTag": "cuda"})
    'registry:5000/streamsrv:cuda'
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]
_UNDERSTOOD = {"apiVersion", "kind", "resources", "patches", "images"}
_KUSTOMIZE_VERSION = re.compile(r"Kustomize Version: v(\d+)\.")


def render(directory: Path) -> list[Object]:
    """The objects ``kubectl kustomize directory`` would print, for the fields this module understands."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _UNDERSTOOD
    assert not unknown, f"{directory}: tests/support/kustomize.py does not render {sorted(unknown)}"
    objects: list[Object] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        objects += render(path) if path.is_dir() else [o for o in yaml.safe_load_all(path.read_text()) if o]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only strategic merge patches from a file: {patch}"
        change = yaml.safe_load((directory / patch["path"]).read_text())
        [target] = [o for o in objects if same_object(o, change)]
        objects[objects.index(target)] = merge(target, change)
    for image in kustomization.get("images", []):
        for container in containers(objects):
            container["image"] = set_image(container["image"], image)
    return objects


def same_object(a: Object, b: Object) -> bool:
    return (a["apiVersion"], a["kind"], a["metadata"]["name"]) == (b["apiVersion"], b["kind"], b["metadata"]["name"])


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch as Kubernetes applies one to the fields used here: maps merge key by key, lists of
    named items (containers, env, volumes, mounts) merge by ``name``, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and named(base) and named(patch):
        by_name = {item["name"]: item for item in base}
        merged = [merge(by_name[p["name"]], p) if p["name"] in by_name else copy.deepcopy(p) for p in patch]
        patched = {p["name"] for p in patch}
        return merged + [copy.deepcopy(item) for item in base if item["name"] not in patched]
    return copy.deepcopy(patch)


def named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def containers(objects: list[Object]) -> list[Object]:
    """Every container and init container of every pod template."""
    out = []
    for o in objects:
        pod = o.get("spec", {}).get("template", {}).get("spec", {})
        out += pod.get("containers", []) + pod.get("initContainers", [])
    return out


def set_image(image: str, rule: dict[str, str]) -> str:
    """kustomize's ``images`` entry ``rule`` applied to ``image`` ("name[:tag]"; digests are not used here)."""
    head, colon, tail = image.rpartition(":")
    name, tag = (head, tail) if colon and "/" not in tail else (image, "")
    if name != rule["name"]:
        return image
    tag = rule.get("newTag", tag)
    return rule.get("newName", name) + (f":{tag}" if tag else "")


def normalised(objects: list[Object]) -> list[Object]:
    """Objects in a stable order with named list items sorted: kustomize moves patched items to the front."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [walk(v) for v in value]
            return sorted(items, key=lambda item: item["name"]) if named(items) else items
        return value

    return sorted((walk(o) for o in objects), key=lambda o: (o["kind"], o["metadata"]["name"]))


def kubectl_kustomize() -> str | None:
    """The path of a kubectl whose built-in kustomize is v5 or newer (the manifests' syntax), else None."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60)
    found = _KUSTOMIZE_VERSION.search(version.stdout)
    return kubectl if found and int(found[1]) >= 5 else None


def kubectl_render(kubectl: str, directory: Path) -> list[Object]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]
