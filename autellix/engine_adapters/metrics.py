"""Prometheus metrics of one sidecar (names prefixed ``autellix_sidecar_``; one registry per app).

Gauges and cumulative counts are read from the gate's :class:`~.gate.GateStats` at scrape time by a
custom collector, so the hot path touches no metric objects except the two latency histograms and the
outcome counter, which the shell observes once per finished call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autellix.engine_adapters.gate import GateStats

PREFIX = "autellix_sidecar_"
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


class _GateCollector(Collector):
    def __init__(self, read: Callable[[], GateStats], priority_enabled: Callable[[], bool]) -> None:
        self._read = read
        self._priority_enabled = priority_enabled

    def collect(self) -> Iterator[Metric]:
        stats = self._read()
        queue = stats.queue
        waiting = GaugeMetricFamily(
            PREFIX + "queue_waiting", "Calls waiting in our queue, by level.", labels=["level"]
        )
        running = GaugeMetricFamily(
            PREFIX + "queue_running", "Admitted calls by the level they hold now.", labels=["level"]
        )
        for level, (w, r) in enumerate(zip(queue.waiting_per_level, queue.running_per_level, strict=True)):
            waiting.add_metric([str(level)], w)
            running.add_metric([str(level)], r)
        yield waiting
        yield running
        yield _gauge("running", "Calls in flight in the engine (admitted, not finished).", stats.in_flight)
        yield _gauge("window_size", "Admission window: most calls allowed in flight now.", stats.window)
        yield _counter("admissions", "Calls admitted into the engine.", queue.admitted)
        yield _counter("demotions", "Running calls moved down a level (quantum used up).", queue.demoted)
        yield _counter(
            "promotions", "Waiting calls promoted to the top level (anti-starvation).", queue.promoted
        )
        yield _counter(
            "preemptions", "Running calls stopped to be resumed later (abort-and-resume).", stats.preempted
        )
        aborts = CounterMetricFamily(
            PREFIX + "aborts",
            "Calls whose client went away (or that failed), by where they were.",
            labels=["where"],
        )
        aborts.add_metric(["queue"], stats.aborted_waiting)
        aborts.add_metric(["engine"], stats.aborted_running)
        yield aborts
        load = stats.engine_load
        if load is not None:
            yield _gauge("engine_running", "Engine's running requests, as last probed.", load.running)
            yield _gauge("engine_waiting", "Engine's waiting requests, as last probed.", load.waiting)
            if load.kv_usage is not None:
                yield _gauge(
                    "engine_kv_usage", "Engine's KV-cache usage (0-1), as last probed.", load.kv_usage
                )
        if stats.kv_capacity_tokens is not None:
            yield _gauge(
                "kv_capacity_tokens",
                "Engine's KV cache size in tokens, as it says.",
                stats.kv_capacity_tokens,
            )
            yield _gauge(
                "kv_reserved_tokens",
                "KV tokens the budget counts as taken: held at the last probe + reserves of calls in flight.",
                stats.kv_reserved_tokens,
            )
        gate = stats.gate
        if gate is not None:
            yield _gauge(
                "resident_programs", "Programs resident on this engine (working-set gate).", gate.residents
            )
            yield _gauge(
                "resident_tokens",
                "The resident programs' KV footprint as the gate counts it.",
                gate.resident_tokens,
            )
            yield _gauge(
                "gate_waiting_programs", "Programs waiting at the working-set gate.", gate.waiting_programs
            )
            yield _gauge("gate_waiting_calls", "Calls waiting at the working-set gate.", gate.waiting_calls)
            events = CounterMetricFamily(
                PREFIX + "gate_programs",
                "Programs that became resident, were displaced, expired or were promoted at the gate.",
                labels=["event"],
            )
            events.add_metric(["admitted"], gate.admitted_programs)
            events.add_metric(["displaced"], gate.displaced_programs)
            events.add_metric(["expired"], gate.expired_programs)
            events.add_metric(["promoted"], gate.promoted_programs)
            yield events
        yield _gauge(
            "engine_priority_enabled",
            "1 if the sidecar sends the engine a priority field.",
            self._priority_enabled(),
        )


class SidecarMetrics:
    """The registry of one sidecar app and the metrics the shell observes directly."""

    def __init__(self, read_stats: Callable[[], GateStats], priority_enabled: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_GateCollector(read_stats, priority_enabled))
        self.call_wait = Histogram(
            PREFIX + "call_wait_seconds",
            "Reported queue wait of finished calls (our queue + engine queue where known).",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.call_exec = Histogram(
            PREFIX + "call_exec_seconds",
            "Reported execution time of finished calls (admission to completion).",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            PREFIX + "requests", "Generation requests by outcome.", ["outcome"], registry=self.registry
        )
        self.rejected = Counter(
            PREFIX + "rejected",
            "Calls refused or cut: queue_full (429), deadline (504 while queued), deadline_midstream.",
            ["reason"],
            registry=self.registry,
        )
        self.resumes = Counter(
            PREFIX + "resumes",
            "Resumed requests sent for stopped calls (abort-and-resume: prompt + generated tokens).",
            registry=self.registry,
        )
        self.probe_failures = Counter(
            PREFIX + "probe_failures",
            "Engine load probes that failed or could not be read.",
            registry=self.registry,
        )
