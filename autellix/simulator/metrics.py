"""Prometheus metrics of the simulated engine, under vLLM's own names (reference.md §4 and §6).

Gauges and counters are read from the engine's cumulative stats at scrape time (a custom collector),
so the engine core keeps no metrics objects. Counters carry the ``_total`` suffix on the wire, as real
vLLM 0.32 exposes them (``vllm:prefix_cache_hits_total``). Latency histograms are observed by the server
in *simulated* seconds: they describe the imitated GPU, whatever ``--time-scale`` the run uses.

Every ``vllm:`` name here is one that vLLM 0.32 exposes too (tests/real_vllm/test_parity.py checks it):
the KV capacity is a label of ``vllm:cache_config_info``, as in vLLM, not a metric of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autellix.simulator.engine import EngineStats

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
_ITL_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class _EngineStatsCollector(Collector):
    def __init__(
        self, read_stats: Callable[[], EngineStats], model_name: str, cache_config: Mapping[str, str]
    ) -> None:
        self._read_stats = read_stats
        self._labels = {"model_name": model_name, "engine": "0"}
        self._cache_config = {**cache_config, "engine": "0"}

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=list(self._labels))
        family.add_metric(list(self._labels.values()), value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=list(self._labels))
        family.add_metric(list(self._labels.values()), value)
        return family

    def collect(self) -> Iterator[Metric]:
        stats = self._read_stats()
        yield self._gauge(
            "vllm:num_requests_running", "Requests in the model execution batch.", stats.num_running
        )
        yield self._gauge("vllm:num_requests_waiting", "Requests waiting to be processed.", stats.num_waiting)
        yield self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.", stats.kv_cache_usage
        )
        info = GaugeMetricFamily(
            "vllm:cache_config_info", "KV cache configuration (labels).", labels=list(self._cache_config)
        )
        info.add_metric(list(self._cache_config.values()), 1.0)
        yield info
        yield self._counter(
            "vllm:prefix_cache_queries", "Prefix-cache queries, in tokens.", stats.prefix_cache_queries
        )
        yield self._counter(
            "vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.", stats.prefix_cache_hits
        )
        yield self._counter("vllm:num_preemptions", "Cumulative preemptions.", stats.num_preemptions)
        yield self._counter("vllm:prompt_tokens", "Prefill tokens processed.", stats.prompt_tokens)
        yield self._counter(
            "vllm:prompt_tokens_cached", "Prompt tokens from the prefix cache.", stats.prefix_cache_hits
        )
        yield self._counter("vllm:generation_tokens", "Generation tokens processed.", stats.generation_tokens)


class _LagCollector(Collector):
    """How far the driver runs behind its scaled clock (not a vLLM metric: the simulation's own health)."""

    def __init__(self, read_lag: Callable[[], float]) -> None:
        self._read_lag = read_lag

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "autellix_sim_engine_lag_seconds",
            "Simulated seconds the engine's steps run behind the scaled wall clock (0 = keeping up; "
            "grows when the host cannot step the engine fast enough for --time-scale).",
            value=self._read_lag(),
        )


class SimEngineMetrics:
    """One registry per server: engine stats plus per-request latency histograms."""

    def __init__(
        self,
        read_stats: Callable[[], EngineStats],
        model_name: str,
        cache_config: Mapping[str, str] | None = None,
        read_lag: Callable[[], float] | None = None,
    ) -> None:
        """``cache_config``: labels of ``vllm:cache_config_info`` (``block_size``, ``num_gpu_blocks``);
        ``read_lag``: the driver's lag behind its scaled clock (``autellix_sim_engine_lag_seconds``)."""
        self.registry = CollectorRegistry()
        self.registry.register(_EngineStatsCollector(read_stats, model_name, cache_config or {}))
        if read_lag is not None:
            self.registry.register(_LagCollector(read_lag))
        labels = ["model_name", "engine"]
        self._label_values = (model_name, "0")
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token (simulated s).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency (simulated s).",
            labels,
            buckets=_ITL_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency (simulated s).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Time waiting before first scheduled.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.success = Counter(
            "vllm:request_success",
            "Finished requests by reason.",
            [*labels, "finished_reason"],
            registry=self.registry,
        )

    def observe_finished(
        self,
        *,
        ttft: float | None,
        token_gaps: list[float],
        e2e: float,
        queue_time: float | None,
        finish_reason: str,
    ) -> None:
        if ttft is not None:
            self.ttft.labels(*self._label_values).observe(ttft)
        itl = self.itl.labels(*self._label_values)
        for gap in token_gaps:
            itl.observe(gap)
        self.e2e.labels(*self._label_values).observe(e2e)
        if queue_time is not None:
            self.queue_time.labels(*self._label_values).observe(queue_time)
        self.success.labels(*self._label_values, finish_reason).inc()
