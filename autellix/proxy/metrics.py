"""The proxy's Prometheus metrics, in a registry of its own per app (no global state).

Names carry the ``autellix_proxy_`` prefix. Label values are bounded: engines are the configured
backends, routes are the proxy's own routes, and routing reasons are reduced to their leading words by
:func:`reason_label` (a router's full reason carries token counts and engine ids).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PROGRAM_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_TOKEN_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_REASON_END = re.compile(r"[(:,]")
_DIGITS = re.compile(r"\d+")
MAX_CACHED_REASONS = 1024


def reason_label(reason: str) -> str:
    """A router's reason cut to its leading words: "short call (12 <= 2048 tokens): ..." → "short call"."""
    head = _REASON_END.split(reason, maxsplit=1)[0].strip()
    return _DIGITS.sub("N", head)[:48] or "unspecified"


class ProxyMetrics:
    """Every metric of one proxy app; the shells update them, the policies never see them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._reasons: dict[str, str] = {}
        r = self.registry
        self.requests = Counter(
            "autellix_proxy_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.added_latency = Histogram(
            "autellix_proxy_added_latency_seconds",
            "time the proxy adds to a generation call (handler time minus the upstream exchange)",
            ["stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "autellix_proxy_time_to_first_token_seconds",
            "from a streaming call's arrival at the proxy to its first byte sent to the client",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.routing = Counter(
            "autellix_proxy_routing_decisions",
            "routing decisions by final engine and reason (pin_redirect: the table sent the call to the pin)",
            ["engine", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "autellix_proxy_calls_in_flight",
            "calls this replica has in flight, per engine",
            ["engine"],
            registry=r,
        )
        self.engine_load = Gauge(
            "autellix_proxy_engine_load",
            "outstanding calls per engine in the program table (the whole fleet)",
            ["engine"],
            registry=r,
        )
        self.backend_healthy = Gauge(
            "autellix_proxy_backend_healthy",
            "1 while the backend is in the pool (it leaves after consecutive failed health checks)",
            ["engine"],
            registry=r,
        )
        self.active_programs = Gauge(
            "autellix_proxy_active_programs", "programs in the program table", registry=r
        )
        self.call_exec = Histogram(
            "autellix_proxy_call_exec_seconds",
            "execution time per call (sidecar report or measured)",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.call_wait = Histogram(
            "autellix_proxy_call_queue_wait_seconds",
            "queue wait per call (sidecar report or measured)",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.program_service = Histogram(
            "autellix_proxy_program_service_seconds",
            "attained service (PLAS sum) of programs when they end",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.program_wait = Histogram(
            "autellix_proxy_program_wait_seconds",
            "accumulated queue wait of programs when they end",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.program_response = Histogram(
            "autellix_proxy_program_response_seconds",
            "program response time (creation to last completion) when a program ends, by kind and by how "
            "it ended (one_call, deleted, expired)",
            ["kind", "ended_by"],
            buckets=_PROGRAM_BUCKETS,
            registry=r,
        )
        self.program_token_latency = Histogram(
            "autellix_proxy_program_token_latency_seconds",
            "program token latency (response time / output tokens, the paper's metric) when a program "
            "that generated tokens ends, by kind and by how it ended",
            ["kind", "ended_by"],
            buckets=_TOKEN_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "autellix_proxy_prompt_tokens",
            "prompt tokens of finished calls as the sidecars report them, by engine",
            ["engine"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "autellix_proxy_cached_prompt_tokens",
            "prompt tokens the engine's prefix cache served, as the sidecars report them, by engine "
            "(over prompt_tokens: the fleet's prefix-cache hit rate)",
            ["engine"],
            registry=r,
        )
        self.table_errors = Counter(
            "autellix_proxy_redis_errors",
            "failed program-table operations on Redis, by operation",
            ["op"],
            registry=r,
        )
        self.table_latency = Histogram(
            "autellix_proxy_redis_latency_seconds",
            "program-table operation latency on Redis, by operation",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.table_degraded = Gauge(
            "autellix_proxy_table_degraded",
            "1 while Redis is unreachable and the local table serves",
            registry=r,
        )
        self.upstream_errors = Counter(
            "autellix_proxy_upstream_errors",
            "failed upstream exchanges, by engine and kind (connect, status_5xx, midstream, timeout)",
            ["engine", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "autellix_proxy_rejected",
            "calls refused or cut by a bound (key_full, engines_full: 429) or their deadline (504 or cut)",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "autellix_proxy_retries",
            "calls retried on another engine, by the engine that failed",
            ["engine"],
            registry=r,
        )
        self.starts_ahead = Counter(
            "autellix_proxy_starts_ahead",
            "calls forwarded before Redis answered their start, by what Redis then answered (confirmed: "
            "the mirrored context was exact; differed: another replica serves the program too; failed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("confirmed", "differed", "failed"):  # every series from the start, at 0
            self.child(self.starts_ahead, outcome)
        self.reports = Counter(
            "autellix_proxy_completion_reports",
            "finished calls by where their measurements came from (sidecar, measured, invalid)",
            ["source"],
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: label sets are bounded (engines, routes, reasons)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def forget_engine(self, engine: str) -> None:
        """A backend left for good (discovery.py): its gauges go, so no stale series remains. (Counters
        stay: they are the record of what it served; in-flight gauges too, until its calls finish.)"""
        for gauge in (self.backend_healthy, self.engine_load):
            self._children.pop((id(gauge), (engine,)), None)
            with contextlib.suppress(KeyError):
                gauge.remove(engine)

    def reason(self, reason: str) -> str:
        """:func:`reason_label`, cached: a router repeats a few reasons (the cache is bounded all the same,
        since a reason may carry token counts)."""
        label = self._reasons.get(reason)
        if label is None:
            if len(self._reasons) >= MAX_CACHED_REASONS:
                self._reasons.clear()
            label = self._reasons[reason] = reason_label(reason)
        return label

    def observe_table(self, op: str, seconds: float, ok: bool) -> None:
        self.child(self.table_latency, op).observe(seconds)
        if not ok:
            self.child(self.table_errors, op).inc()
