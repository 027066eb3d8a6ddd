"""The Kubernetes manifests: every kustomization renders, every object validates against the Kubernetes
schemas (the Prometheus Operator's against ours), references resolve, and every autellix container's
arguments, environment and mounted config are accepted by the real settings models."""

from __future__ import annotations

import argparse
import base64
import importlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import autellix
from autellix.cli import SUBCOMMANDS
from autellix.proxy.config import ProxySettings
from autellix.proxy.discovery import parse_dns_target
from autellix.settings import SettingsError, add_settings_arguments, load_settings
from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.support import (
    CRD_GROUP,
    K8S,
    OVERLAYS,
    Manifest,
    by_kind,
    containers,
    expand,
    find,
    is_autellix_image,
    kustomization_dirs,
    labels_match,
    pod_spec,
    port_number,
    render,
    variable_references,
    workloads,
)

KUBERNETES_VERSIONS = ("1.29", "1.37")  # the oldest and newest schemas we promise to fit
ALL_DIRS = kustomization_dirs()
AUTELLIX_UID = 10001  # the user of deploy/docker/Dockerfile
DRAIN_SECONDS = 60  # aiohttp's default shutdown timeout: how long proxy and sidecar drain calls


def _rel(path: Path) -> str:
    return str(path.relative_to(K8S.parent))


def overlay(name: str) -> tuple[Manifest, ...]:
    return render(K8S / "overlays" / name)


@pytest.mark.parametrize("directory", ALL_DIRS, ids=_rel)
def test_kustomization_renders(directory: Path) -> None:
    manifests = render(directory)
    assert manifests
    keys = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in manifests]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", ALL_DIRS, ids=_rel)
def test_objects_validate_against_the_kubernetes_schemas(directory: Path, version: str) -> None:
    for manifest in render(directory):
        if manifest["apiVersion"].startswith(CRD_GROUP):
            continue  # the next test
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            raise AssertionError(f"{name} at {where}: {exc.message} (Kubernetes {version})") from None


def test_prometheus_operator_objects_match_their_crd_schemas() -> None:
    crds = [m for d in ALL_DIRS for m in render(d) if m["apiVersion"].startswith(CRD_GROUP)]
    assert {m["kind"] for m in crds} == set(SCHEMAS)
    for manifest in crds:
        jsonschema.validate(manifest, SCHEMAS[manifest["kind"]])
    broken = dict(crds[0], spec={**crds[0]["spec"], "podMetricEndpoints": []})
    with pytest.raises(jsonschema.ValidationError):  # the schemas do reject a misspelt field
        jsonschema.validate(broken, SCHEMAS[broken["kind"]])


# ----- what each overlay holds ------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_holds_the_proxy_redis_and_an_engine_group(name: str) -> None:
    manifests = overlay(name)
    proxy = find(manifests, "Deployment", "autellix-proxy")
    assert proxy["spec"]["replicas"] == 3
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceAccount"):
        find(manifests, kind, "autellix-proxy")
    hpa = find(manifests, "HorizontalPodAutoscaler", "autellix-proxy")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "autellix-proxy",
    }
    assert hpa["spec"]["minReplicas"] == proxy["spec"]["replicas"]
    pdb = find(manifests, "PodDisruptionBudget", "autellix-proxy")
    assert labels_match(
        pdb["spec"]["selector"]["matchLabels"], proxy["spec"]["template"]["metadata"]["labels"]
    )
    redis = [w for w in workloads(manifests) if w["metadata"]["name"] == "autellix-redis"]
    assert len(redis) == (0 if name == "external-redis" else 1)
    engines = [
        w
        for w in workloads(manifests)
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "engine"
    ]
    assert len(engines) == 1 and engines[0]["kind"] == "StatefulSet"
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {"autellix"}


@pytest.mark.parametrize("name", ["sim", "vllm", "sglang"])
def test_bundled_redis_persists_with_aof_and_a_password(name: str) -> None:
    manifests = overlay(name)
    redis = find(manifests, "StatefulSet", "autellix-redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    config_volume = next(v for v in pod_spec(redis)["volumes"] if v["name"] == "config")
    conf = find(manifests, "ConfigMap", config_volume["configMap"]["name"])["data"]["redis.conf"]
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert settings["appendonly"] == "yes" and settings["dir"] == "/data"
    container = pod_spec(redis)["containers"][0]
    assert container["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts


@pytest.mark.parametrize("name", ["sim", "vllm", "sglang"])
def test_engine_flags_turn_on_the_engines_priority_scheduling(name: str) -> None:
    statefulset = find(overlay(name), "StatefulSet", f"autellix-{name}")
    engine, sidecar = pod_spec(statefulset)["containers"]
    engine_args = " ".join(engine.get("command", []) + engine["args"])
    expected = {
        "sim": "--scheduling-policy=priority",
        "vllm": "--scheduling-policy=priority",
        "sglang": "--enable-priority-scheduling",
    }[name]
    assert expected in engine_args
    assert sidecar["args"][0] == "sidecar" and f"--engine-kind={name}" in sidecar["args"]
    if name != "sim":
        resources = engine["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
        mounts = {m["name"]: m for m in engine["volumeMounts"]}
        assert mounts["models"]["readOnly"] is True
        assert any("/models/" in arg for arg in engine["args"])


# ----- references and container hygiene --------------------------------------------------------------


def _referenced(spec: dict[str, Any]) -> set[tuple[str, str]]:
    refs = set()
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
        if "persistentVolumeClaim" in volume:
            refs.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    for container in spec["containers"]:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                refs.add(("Secret", source["secretKeyRef"]["name"]))
            if "configMapKeyRef" in source:
                refs.add(("ConfigMap", source["configMapKeyRef"]["name"]))
    if "serviceAccountName" in spec:
        refs.add(("ServiceAccount", spec["serviceAccountName"]))
    return refs


@pytest.mark.parametrize("name", OVERLAYS)
def test_references_resolve(name: str) -> None:
    manifests = overlay(name)
    present = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for workload in workloads(manifests):
        missing = _referenced(pod_spec(workload)) - present
        assert not missing, (workload["metadata"]["name"], missing)
        if workload["kind"] == "StatefulSet":
            service = find(manifests, "Service", workload["spec"]["serviceName"])
            assert labels_match(
                service["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"]
            )
    for service in by_kind(manifests, "Service"):
        selected = [
            w
            for w in workloads(manifests)
            if labels_match(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert any(port_number(c, target) for w in selected for c in pod_spec(w)["containers"]), (
                    target
                )


def _probe_port(probe: dict[str, Any]) -> Any:
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if handler in probe:
            return probe[handler]["port"]
    return None


@pytest.mark.parametrize("name", OVERLAYS)
def test_containers_have_resources_probes_and_safe_defaults(name: str) -> None:
    for workload, container in containers(overlay(name)):
        label = f"{workload['metadata']['name']}/{container['name']}"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), label
        assert "memory" in resources["limits"], label
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            port = _probe_port(probe)
            assert port is None or isinstance(port, int) or port_number(container, port), (label, kind, port)
        if is_autellix_image(container["image"]):
            assert container["image"] == f"autellix:{autellix.__version__}", label
            context = {
                **pod_spec(workload).get("securityContext", {}),
                **container.get("securityContext", {}),
            }
            assert context["runAsNonRoot"] is True and context["runAsUser"] == AUTELLIX_UID, label
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, label


def _prestop_seconds(container: dict[str, Any]) -> int:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


@pytest.mark.parametrize("name", OVERLAYS)
def test_shutdown_leaves_time_to_drain(name: str) -> None:
    """Grace period >= preStop + drain for autellix services; engines outlive their sidecar's preStop."""
    for workload in workloads(overlay(name)):
        spec = pod_spec(workload)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        sidecar_stop = None
        for container in spec["containers"]:
            stop = _prestop_seconds(container)
            if container.get("args", [None])[0] in ("proxy", "sidecar"):
                assert stop > 0 and grace >= stop + DRAIN_SECONDS + 5, (workload["metadata"]["name"], grace)
                if container["args"][0] == "sidecar":
                    sidecar_stop = stop
        if sidecar_stop is not None:
            engine = next(c for c in spec["containers"] if c.get("args", [None])[0] != "sidecar")
            assert _prestop_seconds(engine) > sidecar_stop


@pytest.mark.parametrize("name", OVERLAYS)
def test_env_references_name_variables_defined_before_them(name: str) -> None:
    for _workload, container in containers(overlay(name)):
        defined: list[str] = []
        for env in container.get("env", []):
            for ref in variable_references(env.get("value", "")):
                assert ref in defined, (
                    f"{container['name']}: {env['name']} uses $({ref}) before it is defined"
                )
            defined.append(env["name"])
        for text in container.get("command", []) + container.get("args", []):
            for ref in variable_references(text):
                assert ref in defined, f"{container['name']}: $({ref}) is not an env variable"


# ----- the settings models accept what the manifests give --------------------------------------------


def _secret_value(manifests: tuple[Manifest, ...], name: str, key: str) -> str:
    secret = find(manifests, "Secret", name)
    if key in secret.get("stringData", {}):
        value: str = secret["stringData"][key]
        return value
    return base64.b64decode(secret["data"][key]).decode()


def _environment(manifests: tuple[Manifest, ...], container: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for env in container.get("env", []):
        source = env.get("valueFrom")
        if source is None:
            values[env["name"]] = expand(env.get("value", ""), values)
        elif "secretKeyRef" in source:
            values[env["name"]] = _secret_value(
                manifests, source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]
            )
        else:
            values[env["name"]] = "autellix-pod-0"  # a fieldRef: the pod's name
    return values


def _localise_config(
    manifests: tuple[Manifest, ...],
    spec: dict[str, Any],
    container: dict[str, Any],
    args: list[str],
    tmp_path: Path,
) -> list[str]:
    """Arguments with paths inside mounted ConfigMaps replaced by local copies of those files."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            mounts[mount["mountPath"].rstrip("/") + "/"] = find(
                manifests, "ConfigMap", volume["configMap"]["name"]
            )
    localised = []
    for arg in args:
        prefix, eq, value = arg.rpartition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        for mount_path, configmap in mounts.items():
            if value.startswith(mount_path):
                key = value[len(mount_path) :]
                local = tmp_path / key
                local.write_text(configmap["data"][key], encoding="utf-8")
                value = str(local)
        localised.append(prefix + eq + value)
    return localised


def _load_container_settings(
    manifests: tuple[Manifest, ...],
    workload: Manifest,
    container: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, Any]:
    for key in list(os.environ):
        if key.startswith("AUTELLIX_"):
            monkeypatch.delenv(key)
    env = _environment(manifests, container)
    for key, value in env.items():
        if key.startswith("AUTELLIX_"):
            monkeypatch.setenv(key, value)
    args = _localise_config(manifests, pod_spec(workload), container, list(container["args"]), tmp_path)
    # The subcommand's flags exactly as `autellix SUBCOMMAND` builds them (autellix/cli.py).
    subcommand = next(c for c in SUBCOMMANDS if c.name == args[0])
    module_name, _, attribute = subcommand.settings.partition(":")
    model = getattr(importlib.import_module(module_name), attribute)
    parser = argparse.ArgumentParser(prog=f"autellix {subcommand.name}", exit_on_error=False)
    add_settings_arguments(parser, model)
    return subcommand.name, load_settings(model, parser.parse_args(args[1:]))


@pytest.mark.parametrize("name", OVERLAYS)
def test_autellix_containers_start_with_settings_their_models_accept(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = overlay(name)
    seen = set()
    for workload, container in containers(manifests):
        if not is_autellix_image(container["image"]):
            continue
        assert "command" not in container  # the image's entrypoint is `autellix`; args pick the subcommand
        command, settings = _load_container_settings(manifests, workload, container, tmp_path, monkeypatch)
        seen.add(command)
        assert settings.host == "0.0.0.0"
        own_port = {"proxy": "http", "sidecar": "sidecar", "sim-engine": "engine"}[command]
        assert settings.port == port_number(container, own_port)
        if command == "proxy":
            url = urlsplit(settings.redis_url)
            assert url.scheme in ("redis", "rediss") and url.password, settings.redis_url
            if name != "external-redis":
                assert (url.hostname, url.port) == ("autellix-redis", 6379)
                # The proxy's URL carries the very password redis-server is started with.
                redis = pod_spec(find(manifests, "StatefulSet", "autellix-redis"))["containers"][0]
                assert url.password == _environment(manifests, redis)["REDIS_PASSWORD"]
        if command == "sidecar":
            engine = next(c for c in pod_spec(workload)["containers"] if c is not container)
            assert urlsplit(settings.engine_url).port == port_number(engine, "engine")
    assert {"proxy", "sidecar"} <= seen and ("sim-engine" in seen) == (name == "sim")


@pytest.mark.parametrize("name", OVERLAYS)
def test_proxy_configmap_keys_are_proxy_settings(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("AUTELLIX_"):
            monkeypatch.delenv(key)
    manifests = overlay(name)
    proxy = find(manifests, "Deployment", "autellix-proxy")
    volume = next(v for v in pod_spec(proxy)["volumes"] if v["name"] == "config")
    text = find(manifests, "ConfigMap", volume["configMap"]["name"])["data"]["proxy.yaml"]
    assert set(yaml.safe_load(text)) <= set(ProxySettings.model_fields)
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    settings = load_settings(ProxySettings, argparse.Namespace(config=str(path)))
    assert (settings.backends() or settings.dns_targets()) and not settings.ready_requires_table
    path.write_text(text + "made_up_setting: 1\n")
    with pytest.raises(SettingsError, match="made_up_setting"):
        load_settings(ProxySettings, argparse.Namespace(config=str(path)))


@pytest.mark.parametrize("name", OVERLAYS)
def test_proxy_backends_are_the_engine_pods(name: str) -> None:
    """DNS discovery: the proxy follows the headless Service of every engine StatefulSet, on the
    sidecar's port (one backend per ready pod, added and removed as the StatefulSet scales)."""
    manifests = overlay(name)
    proxy = find(manifests, "Deployment", "autellix-proxy")
    volume = next(v for v in pod_spec(proxy)["volumes"] if v["name"] == "config")
    config = yaml.safe_load(find(manifests, "ConfigMap", volume["configMap"]["name"])["data"]["proxy.yaml"])
    assert "backend" not in config
    targets = {parse_dns_target(spec) for spec in config["backend_dns"]}
    engines = [w for w in by_kind(manifests, "StatefulSet") if w["metadata"]["name"] != "autellix-redis"]
    expected = set()
    for statefulset in engines:
        service = find(manifests, "Service", statefulset["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert not service["spec"].get("publishNotReadyAddresses")  # only ready pods are backends
        sidecar = next(c for c in pod_spec(statefulset)["containers"] if c["args"][0] == "sidecar")
        port = port_number(sidecar, "sidecar")
        assert any(p["port"] == port for p in service["spec"]["ports"])
        expected.add((service["metadata"]["name"], port))
    assert targets == expected
