"""Dashboards, alert rules and scrape configs: well-formed, in step with the manifests, and naming only
metrics that a running proxy, sidecar and simulated engine really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Scrape
from tests.deploy.promql import (
    metric_names,
    missing_metrics,
    rated_metrics,
    used_labels,
    variable_query_metrics,
)
from tests.deploy.support import (
    GRAFANA,
    K8S,
    OVERLAYS,
    PROMETHEUS,
    by_kind,
    find,
    labels_match,
    pod_spec,
    port_number,
    render,
    workloads,
)

# Labels that Prometheus (kubernetes_sd relabelling here, or the Operator) puts on every target.
TARGET_LABELS = frozenset({"namespace", "pod", "container", "job", "instance", "service", "endpoint"})
DASHBOARD_FILES = sorted(GRAFANA.glob("*.json"))
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@cache
def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / name).read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in panels(board) for target in panel.get("targets", [])]


def variable_queries(board: dict[str, Any]) -> list[str]:
    queries = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


@cache
def alert_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in alert_groups() for rule in group["rules"]]


def all_expressions() -> list[str]:
    exprs = [t["expr"] for f in DASHBOARD_FILES for t in targets(dashboard(f.name))]
    return exprs + [rule["expr"] for rule in alert_rules()]


# ----- dashboards -------------------------------------------------------------------------------------


def test_the_four_dashboards_are_the_generators_output() -> None:
    assert [f.name for f in DASHBOARD_FILES] == [
        "autellix-engines.json",
        "autellix-fleet.json",
        "autellix-programs.json",
        "autellix-routing.json",
    ]
    result = subprocess.run(
        [sys.executable, str(GRAFANA / "dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", [f.name for f in DASHBOARD_FILES])
def test_dashboard_is_importable_into_any_grafana(name: str) -> None:
    board = dashboard(name)
    assert board["uid"] == name.removesuffix(".json") and board["title"].startswith("autellix / ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert "__inputs" not in board  # no import-time prompt: the datasource variable picks the source
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}"
            # Every query follows the namespace variable, so one Grafana can watch several installs.
            assert '$namespace"' in target["expr"], target["expr"]
            legend_labels = set(_LEGEND_LABEL.findall(target.get("legendFormat", "")))
            assert legend_labels <= used_labels(target["expr"]), (target["legendFormat"], target["expr"])


@pytest.mark.parametrize(
    ("name", "required"),
    [
        (
            "autellix-fleet.json",
            {
                "autellix_proxy_requests_total",
                "autellix_proxy_added_latency_seconds_bucket",
                "autellix_proxy_time_to_first_token_seconds_bucket",
                "autellix_proxy_upstream_errors_total",
            },
        ),
        (
            "autellix-programs.json",
            {
                "autellix_proxy_active_programs",
                "autellix_proxy_program_service_seconds_bucket",
                "autellix_proxy_program_wait_seconds_bucket",
                "autellix_proxy_program_token_latency_seconds_bucket",
                "autellix_proxy_program_response_seconds_bucket",
                "autellix_proxy_program_response_seconds_count",
                "autellix_proxy_cached_prompt_tokens_total",
                "autellix_proxy_prompt_tokens_total",
                "autellix_sidecar_promotions_total",
            },
        ),
        (
            "autellix-engines.json",
            {
                "autellix_sidecar_queue_waiting",
                "autellix_sidecar_window_size",
                "autellix_sidecar_engine_running",
                "autellix_sidecar_engine_waiting",
                "autellix_sidecar_engine_kv_usage",
                "vllm:prefix_cache_hits_total",
                "vllm:prefix_cache_queries_total",
            },
        ),
        (
            "autellix-routing.json",
            {
                "autellix_proxy_routing_decisions_total",
                "autellix_proxy_engine_load",
                "autellix_proxy_calls_in_flight",
            },
        ),
    ],
)
def test_dashboard_covers_its_topic(name: str, required: set[str]) -> None:
    used = {metric for target in targets(dashboard(name)) for metric in metric_names(target["expr"])}
    assert required <= used, required - used


# ----- every metric exists ----------------------------------------------------------------------------


def test_every_metric_in_dashboards_and_alerts_is_exported(scrape: Scrape) -> None:
    exposition = scrape.exposition()
    assert missing_metrics(all_expressions(), exposition) == []
    for f in DASHBOARD_FILES:
        for query in variable_queries(dashboard(f.name)):
            assert variable_query_metrics(query) <= exposition.names(), query
    # Each exporter is really behind the check (a page that failed to scrape would leave names out).
    for page, prefix in (
        (scrape.proxy, "autellix_proxy_"),
        (scrape.sidecar, "autellix_sidecar_"),
        (scrape.engine, "vllm:"),
    ):
        assert f"# TYPE {prefix}" in page


def test_rate_is_taken_of_counters_only(scrape: Scrape) -> None:
    exposition = scrape.exposition()
    for expr in all_expressions():
        for metric in rated_metrics(expr):
            assert exposition.is_counter_like(metric), f"rate() of a non-counter {metric}: {expr}"


def test_labels_used_exist_on_the_metrics(scrape: Scrape) -> None:
    exposition = scrape.exposition()
    checked = 0
    for expr in all_expressions():
        seen = [exposition.labels_of(m) for m in metric_names(expr)]
        if any(labels is None for labels in seen):
            continue  # a family with no sample yet (e.g. Redis errors): its labels are unknown
        available = set().union(*(labels for labels in seen if labels is not None)) | TARGET_LABELS
        assert used_labels(expr) <= available, (used_labels(expr) - available, expr)
        checked += 1
    assert checked >= 0.8 * len(all_expressions())


# ----- alerts -----------------------------------------------------------------------------------------


def test_alert_rules_are_complete_and_the_operator_copy_agrees() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)) and len(names) >= 8
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    operator_copy = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    assert operator_copy["spec"]["groups"] == alert_groups()


# ----- scrape configuration and monitors --------------------------------------------------------------


def _keep_rules(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in job["relabel_configs"] if r.get("action") == "keep"]


def _kept(job: dict[str, Any], pod_labels: dict[str, str], port_name: str) -> bool:
    """Whether a job's keep rules keep the target of one container port of a pod."""
    meta = {
        f"__meta_kubernetes_pod_label_{k.replace('.', '_').replace('/', '_').replace('-', '_')}": v
        for k, v in pod_labels.items()
    }
    meta["__meta_kubernetes_pod_container_port_name"] = port_name
    for rule in _keep_rules(job):
        value = rule.get("separator", ";").join(meta.get(label, "") for label in rule["source_labels"])
        if not re.fullmatch(rule["regex"], value):
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_plain_prometheus_config_scrapes_every_metrics_port(overlay: str) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert all((PROMETHEUS / name).is_file() for name in config["rule_files"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        targets_labels = {r.get("target_label") for r in job["relabel_configs"]}
        assert {"namespace", "pod", "container"} <= targets_labels, job["job_name"]
    manifests = render(K8S / "overlays" / overlay)
    wanted = {"proxy": ("autellix-proxy", {"http"}), "engine": ("autellix-engines", {"sidecar", "engine"})}
    for workload in workloads(manifests):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        component = labels.get("app.kubernetes.io/component")
        if component not in wanted:
            continue
        job_name, port_names = wanted[component]
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        assert port_names <= ports, (workload["metadata"]["name"], ports)
        for port in ports:
            assert _kept(jobs[job_name], labels, port) == (port in port_names), (job_name, port)


def test_operator_monitors_select_the_proxy_service_and_every_engine_pod() -> None:
    monitoring = render(K8S / "monitoring")
    service_monitor = find(monitoring, "ServiceMonitor", "autellix-proxy")
    pod_monitor = find(monitoring, "PodMonitor", "autellix-engines")
    assert {m["kind"] for m in monitoring} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    for overlay in OVERLAYS:
        manifests = render(K8S / "overlays" / overlay)
        service = find(manifests, "Service", "autellix-proxy")
        assert labels_match(service_monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= service_ports
        engines = [
            w
            for w in workloads(manifests)
            if labels_match(
                pod_monitor["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert engines, overlay
        for workload in engines:
            for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
                assert any(port_number(c, endpoint["port"]) for c in pod_spec(workload)["containers"]), (
                    endpoint
                )
    assert all(m["metadata"]["namespace"] == "autellix" for m in monitoring)


def test_grafana_configmaps_carry_the_dashboards_for_the_sidecar() -> None:
    configmaps = by_kind(render(K8S / "monitoring"), "ConfigMap")
    carried = {}
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        # kubectl apply records the object in an annotation limited to 256 KiB.
        assert len(json.dumps(configmap)) < 200_000
        carried.update(configmap["data"])
    assert {name: json.loads(text) for name, text in carried.items()} == {
        f.name: dashboard(f.name) for f in DASHBOARD_FILES
    }


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """Prometheus's own parser on the alert rules and on every dashboard query (as recording rules)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    grafana_variables = {"$__rate_interval": "5m", "$namespace": ".*", "$pod": ".*"}
    rules: list[dict[str, str]] = []
    for expr in (t["expr"] for f in DASHBOARD_FILES for t in targets(dashboard(f.name))):
        for variable, value in grafana_variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"autellix:dashboard_query:{len(rules)}", "expr": expr})
    dashboard_rules = tmp_path / "dashboards.yml"
    dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    for path in (PROMETHEUS / "alerts.yml", dashboard_rules):
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
