"""Build the autellix Grafana dashboards (the ``*.json`` files beside this script) from short descriptions.

    python deploy/grafana/dashboards.py           # rewrite the JSON files
    python deploy/grafana/dashboards.py --check   # exit 1 if a JSON file differs from what this builds

Every PromQL expression names only metrics that the proxy (``autellix_proxy_*``), the sidecar
(``autellix_sidecar_*``) and the simulated engine or vLLM (``vllm:*``) export; tests/deploy checks that
against the /metrics output of running processes. Each dashboard has a ``datasource`` variable (any
Prometheus) and a ``namespace`` variable, so it imports as it is into any Grafana.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
POD = 'namespace=~"$namespace", pod=~"$pod"'
GENERATION = 'route=~"/v1/chat/completions|/v1/completions"'
RATE = "[$__rate_interval]"


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries, stat or heatmap
    width: int = 12
    height: int = 8
    stacked: bool = False
    max_value: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    engine_pods: bool = False  # add a ``pod`` variable over the engine pods
    tags: tuple[str, ...] = field(default=("autellix",))


def quantiles(
    metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> tuple[Query, ...]:
    """p50/p90/p99 (or ``qs``) of a histogram, optionally one series per ``by`` label."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}{RATE})))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in qs
    )


def heatmap(title: str, description: str, metric: str, selector: str) -> Panel:
    return Panel(
        title,
        description,
        (Query(f"sum by (le) (rate({metric}_bucket{{{selector}}}{RATE}))", "{{le}}"),),
        unit="s",
        kind="heatmap",
    )


def rate_by(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}{RATE}))"


def total_rate(metric: str, selector: str) -> str:
    return f"sum(rate({metric}{{{selector}}}{RATE}))"


# ----- fleet overview ---------------------------------------------------------------------------------

FLEET = Dashboard(
    uid="autellix-fleet",
    title="autellix / Fleet overview",
    description="Requests, errors, proxy overhead, time to first token and the program table, fleet-wide.",
    rows=(
        Row(
            "Traffic",
            (
                Panel(
                    "Generation requests/s",
                    "Chat and completion calls answered by all proxy replicas.",
                    (Query(total_rate("autellix_proxy_requests_total", f"{NS}, {GENERATION}")),),
                    unit="reqps",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Generation error ratio (5xx)",
                    "Share of chat and completion calls answered with a 5xx status.",
                    (
                        Query(
                            total_rate("autellix_proxy_requests_total", f'{NS}, {GENERATION}, status=~"5.."')
                            + " / "
                            + total_rate("autellix_proxy_requests_total", f"{NS}, {GENERATION}")
                        ),
                    ),
                    unit="percentunit",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Active programs",
                    "Programs in the program table. Every replica reads the same shared table, so this is "
                    "the largest replica's count, not a sum.",
                    (Query(f"max(autellix_proxy_active_programs{{{NS}}})"),),
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Healthy backends",
                    "Engines (sidecars) that passed their last health check on at least one replica, of "
                    "all configured.",
                    (
                        Query(
                            f"count(max by (engine) (autellix_proxy_backend_healthy{{{NS}}}) == 1)", "healthy"
                        ),
                        Query(
                            f"count(max by (engine) (autellix_proxy_backend_healthy{{{NS}}}))", "configured"
                        ),
                    ),
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Requests by route and status",
                    "Every HTTP request the proxies answered.",
                    (
                        Query(
                            rate_by("autellix_proxy_requests_total", NS, "route, status"),
                            "{{route}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Errors and retries",
                    "4xx/5xx answers by status; failed upstream exchanges by kind (connect, status_5xx, "
                    "midstream, timeout); calls retried on another engine.",
                    (
                        Query(
                            rate_by("autellix_proxy_requests_total", f'{NS}, status=~"[45].."', "status"),
                            "HTTP {{status}}",
                        ),
                        Query(
                            rate_by("autellix_proxy_upstream_errors_total", NS, "kind"), "upstream {{kind}}"
                        ),
                        Query(total_rate("autellix_proxy_retries_total", NS), "retries"),
                    ),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Time to first token (at the proxy)",
                    "From a streaming call's arrival at the proxy to its first byte sent to the client.",
                    quantiles("autellix_proxy_time_to_first_token_seconds", NS),
                    unit="s",
                ),
                Panel(
                    "Proxy overhead",
                    "Time the proxy adds to a generation call: handler time minus the upstream exchange.",
                    quantiles("autellix_proxy_added_latency_seconds", NS, by="stream", qs=(0.5, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Engine time to first token",
                    "vLLM's own histogram (the simulated engine reports it in simulated seconds).",
                    quantiles("vllm:time_to_first_token_seconds", NS),
                    unit="s",
                ),
                Panel(
                    "Call queue wait and execution",
                    "Per call, from the sidecars' completion reports (or timed by the proxy without one).",
                    (
                        *quantiles("autellix_proxy_call_queue_wait_seconds", NS, qs=(0.5, 0.99)),
                        *(
                            Query(q.expr, "exec " + q.legend)
                            for q in quantiles("autellix_proxy_call_exec_seconds", NS, qs=(0.5, 0.99))
                        ),
                    ),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Program table",
            (
                Panel(
                    "Program table degraded",
                    "1 while a replica cannot reach Redis and serves from its local table (programs are "
                    "then tracked per replica).",
                    (Query(f"max by (pod) (autellix_proxy_table_degraded{{{NS}}})", "{{pod}}"),),
                    width=4,
                    max_value=1,
                ),
                Panel(
                    "Redis latency p99 by operation",
                    "Program-table operations on Redis.",
                    quantiles("autellix_proxy_redis_latency_seconds", NS, by="op", qs=(0.99,)),
                    unit="s",
                    width=5,
                ),
                Panel(
                    "Redis errors by operation",
                    "Failed program-table operations on Redis.",
                    (Query(rate_by("autellix_proxy_redis_errors_total", NS, "op"), "{{op}}"),),
                    unit="ops",
                    width=5,
                ),
                Panel(
                    "Completion reports by source",
                    "Where finished calls' measurements came from: sidecar (measured in front of the "
                    "engine), measured (timed by the proxy), invalid.",
                    (Query(rate_by("autellix_proxy_completion_reports_total", NS, "source"), "{{source}}"),),
                    unit="reqps",
                    width=5,
                ),
                Panel(
                    "Calls sent ahead of their start, by outcome",
                    "Calls forwarded before Redis answered their start (the replica's mirror of the program "
                    "was exact). differed: another replica serves the program too, so that call carried a "
                    "stale priority and the program now waits for Redis; a steady rate means programs "
                    "spread over replicas (session affinity on the Service keeps them on one).",
                    (Query(rate_by("autellix_proxy_starts_ahead_total", NS, "outcome"), "{{outcome}}"),),
                    unit="reqps",
                    width=5,
                ),
            ),
        ),
    ),
)

# ----- programs ---------------------------------------------------------------------------------------

_ENDED = (
    "Programs ended with DELETE /v1/programs/{id} (programs that expire after program_ttl are not counted)."
)
_ENDED_ALL = (
    "Observed when a program ends: with its only call, by DELETE, or by expiry after program_ttl (expiry "
    "counts too, since most clients never end their programs; the idle time before it is not counted)."
)

PROGRAMS = Dashboard(
    uid="autellix-programs",
    title="autellix / Programs",
    description="Programs: how many, how much service they attain, how long they wait, anti-starvation.",
    rows=(
        Row(
            "Programs",
            (
                Panel(
                    "Active programs",
                    "Programs in the shared program table (the largest replica's count).",
                    (Query(f"max(autellix_proxy_active_programs{{{NS}}})"),),
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Programs ended/s",
                    _ENDED,
                    (Query(total_rate("autellix_proxy_program_service_seconds_count", NS)),),
                    unit="reqps",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Mean service of an ended program",
                    "Attained service (the PLAS sum of its calls' execution times). " + _ENDED,
                    (
                        Query(
                            total_rate("autellix_proxy_program_service_seconds_sum", NS)
                            + " / "
                            + total_rate("autellix_proxy_program_service_seconds_count", NS)
                        ),
                    ),
                    unit="s",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Wait / service of ended programs",
                    "Accumulated queue wait over attained service, fleet-wide: the quantity the sidecars' "
                    "anti-starvation rule bounds per program (beta). " + _ENDED,
                    (
                        Query(
                            total_rate("autellix_proxy_program_wait_seconds_sum", NS)
                            + " / "
                            + total_rate("autellix_proxy_program_service_seconds_sum", NS)
                        ),
                    ),
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Active programs over time",
                    "Programs in the shared program table (the largest replica's count).",
                    (Query(f"max(autellix_proxy_active_programs{{{NS}}})", "programs"),),
                    width=24,
                    height=6,
                ),
            ),
        ),
        Row(
            "Program latency: the paper's metric, by the kind the client names",
            (
                Panel(
                    "Program token latency by kind",
                    "Program response time over the tokens it generated (s/token, Autellix §6), p50 and "
                    "p95 per kind (X-Program-Kind or metadata.program_kind; unspecified when none). "
                    + _ENDED_ALL,
                    quantiles("autellix_proxy_program_token_latency_seconds", NS, by="kind", qs=(0.5, 0.95)),
                    unit="s",
                ),
                Panel(
                    "Program response time by kind",
                    "Creation to last completion, p50 and p95 per kind. " + _ENDED_ALL,
                    quantiles("autellix_proxy_program_response_seconds", NS, by="kind", qs=(0.5, 0.95)),
                    unit="s",
                ),
                Panel(
                    "Fleet prefix-cache hit rate",
                    "Prompt tokens the engines' prefix caches served over all prompt tokens, as the "
                    "sidecars report them per call (calls without a sidecar report none).",
                    (
                        Query(
                            total_rate("autellix_proxy_cached_prompt_tokens_total", NS)
                            + " / "
                            + total_rate("autellix_proxy_prompt_tokens_total", NS),
                            "hit rate",
                        ),
                        Query(
                            "sum by (engine) (rate(autellix_proxy_cached_prompt_tokens_total"
                            f"{{{NS}}}{RATE})) / sum by (engine) (rate(autellix_proxy_prompt_tokens_total"
                            f"{{{NS}}}{RATE}))",
                            "{{engine}}",
                        ),
                    ),
                    unit="percentunit",
                    max_value=1.0,
                ),
                Panel(
                    "Programs ended/s by how they ended",
                    "one_call: a call without a program id; deleted: DELETE /v1/programs/{id}; expired: "
                    "idle for program_ttl (most agents never say they are done).",
                    (
                        Query(
                            rate_by("autellix_proxy_program_response_seconds_count", NS, "ended_by"),
                            "{{ended_by}}",
                        ),
                    ),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "Service and wait distributions",
            (
                heatmap(
                    "Program attained service",
                    "Distribution of attained service at the end of a program. " + _ENDED,
                    "autellix_proxy_program_service_seconds",
                    NS,
                ),
                heatmap(
                    "Program accumulated wait",
                    "Distribution of the queue wait a program accumulated over its calls. " + _ENDED,
                    "autellix_proxy_program_wait_seconds",
                    NS,
                ),
                Panel(
                    "Program service quantiles",
                    _ENDED,
                    quantiles("autellix_proxy_program_service_seconds", NS),
                    unit="s",
                ),
                Panel(
                    "Program wait quantiles",
                    _ENDED,
                    quantiles("autellix_proxy_program_wait_seconds", NS),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Calls",
            (
                Panel(
                    "Call queue wait",
                    "Queue wait per call (the sidecar's queue plus the engine's where known).",
                    quantiles("autellix_proxy_call_queue_wait_seconds", NS),
                    unit="s",
                ),
                Panel(
                    "Call execution time",
                    "Execution time per call (admission to completion).",
                    quantiles("autellix_proxy_call_exec_seconds", NS),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Anti-starvation and demotion (sidecars)",
            (
                Panel(
                    "Starvation promotions/s by engine pod",
                    "Waiting calls moved to the top queue because (W_program + W_call) / (T_program + "
                    "T_call) reached beta.",
                    (Query(rate_by("autellix_sidecar_promotions_total", NS, "pod"), "{{pod}}"),),
                    unit="ops",
                ),
                Panel(
                    "Demotions/s by engine pod",
                    "Running calls moved one queue down after using up their queue's time quantum.",
                    (Query(rate_by("autellix_sidecar_demotions_total", NS, "pod"), "{{pod}}"),),
                    unit="ops",
                ),
            ),
        ),
    ),
)

# ----- engines ----------------------------------------------------------------------------------------

ENGINES = Dashboard(
    uid="autellix-engines",
    title="autellix / Engines",
    description="Per engine pod: the sidecar's queue levels and admission window, the engine's load, "
    "KV cache and prefix-cache hits.",
    engine_pods=True,
    rows=(
        Row(
            "Sidecar queues",
            (
                Panel(
                    "Waiting calls by queue level",
                    "Calls held in the sidecars' multi-level queues (level 0 is served first).",
                    (Query(f"sum by (level) (autellix_sidecar_queue_waiting{{{POD}}})", "level {{level}}"),),
                    stacked=True,
                ),
                Panel(
                    "Waiting calls by engine pod",
                    "Calls held in each sidecar's queue, all levels.",
                    (Query(f"sum by (pod) (autellix_sidecar_queue_waiting{{{POD}}})", "{{pod}}"),),
                ),
                Panel(
                    "Admitted calls by queue level",
                    "Calls in the engines, by the level they hold now.",
                    (Query(f"sum by (level) (autellix_sidecar_queue_running{{{POD}}})", "level {{level}}"),),
                    stacked=True,
                ),
                Panel(
                    "Admission window and calls in flight",
                    "The window is the most calls a sidecar lets into its engine now (adaptive).",
                    (
                        Query(f"max by (pod) (autellix_sidecar_window_size{{{POD}}})", "{{pod}} window"),
                        Query(f"max by (pod) (autellix_sidecar_running{{{POD}}})", "{{pod}} in flight"),
                    ),
                ),
                Panel(
                    "Admissions, demotions and promotions",
                    "Calls admitted into the engines, moved down a level, promoted against starvation.",
                    (
                        Query(total_rate("autellix_sidecar_admissions_total", POD), "admissions"),
                        Query(total_rate("autellix_sidecar_demotions_total", POD), "demotions"),
                        Query(total_rate("autellix_sidecar_promotions_total", POD), "promotions"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Aborted calls",
                    "Calls whose client went away (or that failed), by where they were.",
                    (Query(rate_by("autellix_sidecar_aborts_total", POD, "where"), "{{where}}"),),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Engine load (as the sidecars probe it)",
            (
                Panel(
                    "Engine running requests",
                    "The engine's running requests at the sidecar's last probe (any engine kind).",
                    (Query(f"max by (pod) (autellix_sidecar_engine_running{{{POD}}})", "{{pod}}"),),
                ),
                Panel(
                    "Engine waiting requests",
                    "The engine's own waiting queue at the last probe; the sidecar keeps it short.",
                    (Query(f"max by (pod) (autellix_sidecar_engine_waiting{{{POD}}})", "{{pod}}"),),
                ),
                Panel(
                    "KV-cache usage",
                    "The engine's KV-cache usage at the last probe.",
                    (Query(f"max by (pod) (autellix_sidecar_engine_kv_usage{{{POD}}})", "{{pod}}"),),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "Priority field sent to the engine",
                    "1 if the sidecar maps queue levels onto the engine's priority field.",
                    (Query(f"max by (pod) (autellix_sidecar_engine_priority_enabled{{{POD}}})", "{{pod}}"),),
                    kind="stat",
                ),
            ),
        ),
        Row(
            "Engine metrics (vLLM and the simulated engine)",
            (
                Panel(
                    "Prefix-cache hit rate",
                    "Prompt tokens served from the prefix cache, of those looked up (vLLM's counters).",
                    (
                        Query(
                            rate_by("vllm:prefix_cache_hits_total", POD, "pod")
                            + " / "
                            + rate_by("vllm:prefix_cache_queries_total", POD, "pod"),
                            "{{pod}}",
                        ),
                    ),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "Preemptions/s",
                    "Running requests preempted by the engine (recompute) for lack of KV blocks.",
                    (Query(rate_by("vllm:num_preemptions_total", POD, "pod"), "{{pod}}"),),
                    unit="ops",
                ),
                Panel(
                    "Tokens/s",
                    "Prefill and generation tokens processed.",
                    (
                        Query(rate_by("vllm:prompt_tokens_total", POD, "pod"), "{{pod}} prompt"),
                        Query(rate_by("vllm:generation_tokens_total", POD, "pod"), "{{pod}} generation"),
                    ),
                ),
                Panel(
                    "Engine queue time p90",
                    "Time a request waited inside the engine before it was first scheduled.",
                    quantiles("vllm:request_queue_time_seconds", POD, by="pod", qs=(0.9,)),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Sidecar call timing",
            (
                Panel(
                    "Call wait (sidecar reports)",
                    "Queue wait of finished calls: the sidecar's queue plus the engine's where known.",
                    quantiles("autellix_sidecar_call_wait_seconds", POD),
                    unit="s",
                ),
                Panel(
                    "Call execution (sidecar reports)",
                    "Admission to completion of finished calls.",
                    quantiles("autellix_sidecar_call_exec_seconds", POD),
                    unit="s",
                ),
                Panel(
                    "Sidecar requests by outcome",
                    "Generation requests by outcome.",
                    (Query(rate_by("autellix_sidecar_requests_total", POD, "outcome"), "{{outcome}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Engine load probe failures/s",
                    "Probes of the engine's load that failed or could not be read.",
                    (Query(rate_by("autellix_sidecar_probe_failures_total", POD, "pod"), "{{pod}}"),),
                    unit="ops",
                ),
            ),
        ),
    ),
)

# ----- routing ----------------------------------------------------------------------------------------

_DECISIONS = "autellix_proxy_routing_decisions_total"

ROUTING = Dashboard(
    uid="autellix-routing",
    title="autellix / Routing",
    description="The proxies' routing: decisions by reason and engine, program pins, load balance.",
    rows=(
        Row(
            "Decisions",
            (
                Panel(
                    "Routing decisions by reason",
                    "short call: least-used engine; long call: the program's pinned engine (pinned on its "
                    "first long call); pin_redirect: another replica had pinned the program first.",
                    (Query(rate_by(_DECISIONS, NS, "reason"), "{{reason}}"),),
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "Routing decisions by engine",
                    "Calls sent to each engine (backend id).",
                    (Query(rate_by(_DECISIONS, NS, "engine"), "{{engine}}"),),
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "Share of calls per engine",
                    "An even split means the balancer spreads the load; pins skew it on purpose.",
                    (
                        Query(
                            rate_by(_DECISIONS, NS, "engine")
                            + " / scalar("
                            + total_rate(_DECISIONS, NS)
                            + ")",
                            "{{engine}}",
                        ),
                    ),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "Pinned calls by engine",
                    "Long calls sent to their program's engine, and calls redirected to an existing pin.",
                    (
                        Query(
                            rate_by(_DECISIONS, f'{NS}, reason=~"long call|pin_redirect"', "engine, reason"),
                            "{{engine}} {{reason}}",
                        ),
                    ),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "Load balance",
            (
                Panel(
                    "Outstanding calls per engine (program table)",
                    "The fleet's outstanding calls per engine as the shared (Redis) program table counts "
                    "them; every replica reads the same numbers.",
                    (Query(f"max by (engine) (autellix_proxy_engine_load{{{NS}}})", "{{engine}}"),),
                ),
                Panel(
                    "Calls in flight per engine",
                    "Summed over proxy replicas.",
                    (Query(f"sum by (engine) (autellix_proxy_calls_in_flight{{{NS}}})", "{{engine}}"),),
                    stacked=True,
                ),
                Panel(
                    "Load imbalance (busiest engine / mean)",
                    "1 is a perfect balance.",
                    (
                        Query(
                            f"max(sum by (engine) (autellix_proxy_calls_in_flight{{{NS}}})) / "
                            f"avg(sum by (engine) (autellix_proxy_calls_in_flight{{{NS}}}))",
                            "imbalance",
                        ),
                    ),
                ),
                Panel(
                    "Backend health",
                    "1 if every proxy replica saw the engine pass its last health check.",
                    (Query(f"min by (engine) (autellix_proxy_backend_healthy{{{NS}}})", "{{engine}}"),),
                    max_value=1,
                ),
                Panel(
                    "Retries by failed engine",
                    "Calls retried on another engine after this one failed before the first byte.",
                    (Query(rate_by("autellix_proxy_retries_total", NS, "engine"), "{{engine}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Upstream errors by engine and kind",
                    "Failed exchanges with engines (connect, status_5xx, midstream, timeout).",
                    (
                        Query(
                            rate_by("autellix_proxy_upstream_errors_total", NS, "engine, kind"),
                            "{{engine}} {{kind}}",
                        ),
                    ),
                    unit="reqps",
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (FLEET, PROGRAMS, ENGINES, ROUTING)


# ----- JSON model -------------------------------------------------------------------------------------


def _target(query: Query, ref: int, kind: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "refId": chr(ord("A") + ref),
    }
    if kind == "heatmap":
        target["format"] = "heatmap"
    return target


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stacked else 5,
            "lineWidth": 1,
            "showPoints": "never",
            "stacking": {"group": "A", "mode": "normal" if panel.stacked else "none"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "colorMode": "value",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    else:
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"show": True, "yHistogram": True},
            "yAxis": {"unit": panel.unit},
        }
    return {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "options": options,
        "targets": [_target(q, i, panel.kind) for i, q in enumerate(panel.queries)],
        "title": panel.title,
        "type": panel.kind,
    }


def _layout(dashboard: Dashboard) -> list[dict[str, Any]]:
    """Rows one under the other; panels fill each row left to right, 24 columns wide."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in dashboard.rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "type": "datasource",
        },
        _query_variable("namespace", "Namespace", "label_values(autellix_proxy_active_programs, namespace)"),
    ]
    if dashboard.engine_pods:
        variables.append(
            _query_variable(
                "pod",
                "Engine pod",
                'label_values(autellix_sidecar_window_size{namespace=~"$namespace"}, pod)',
            )
        )
    return variables


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    # allValue ".*" also matches series without the label (a plain, non-Kubernetes Prometheus).
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def build(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (schema version 39, Grafana 10.4 and later)."""
    return {
        "annotations": {"list": []},
        "description": dashboard.description,
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["autellix"],
                "targetBlank": False,
                "title": "autellix",
                "type": "dashboards",
            }
        ],
        "panels": _layout(dashboard),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": list(dashboard.tags),
        "templating": {"list": _variables(dashboard)},
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
    }


def render(dashboard: Dashboard) -> str:
    return json.dumps(build(dashboard), indent=2, sort_keys=True) + "\n"


def path_of(dashboard: Dashboard) -> Path:
    return HERE / f"{dashboard.uid}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for dashboard in DASHBOARDS:
        path = path_of(dashboard)
        text = render(dashboard)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python deploy/grafana/dashboards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
