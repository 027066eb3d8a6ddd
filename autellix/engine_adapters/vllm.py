"""``vllm``: the adapter for vLLM's OpenAI-compatible server (reference.md §4 and §6).

Theory of operation (the rules of base.py, as vLLM answers them)
----------------------------------------------------------------
1. Load: ``GET /metrics``; ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` summed over
   label sets (one per engine core under data parallelism), ``vllm:kv_cache_usage_perc`` (older:
   ``vllm:gpu_cache_usage_perc``) as the maximum. Counters carry ``_total`` in vLLM 0.32
   (``vllm:num_preemptions_total``); the bare name is read too, for older versions and exporters.
2. Priority: lower values first, ties by arrival (``--scheduling-policy priority``). vLLM exposes its
   policy only on ``GET /server_info`` in dev mode (``VLLM_SERVER_DEV_MODE=1``), as
   ``scheduler_config.policy``; anything else leaves ``auto`` at "unknown", i.e. no priority sent.
3. KV capacity: the labels ``num_gpu_blocks`` and ``block_size`` of ``vllm:cache_config_info`` (an
   info-style gauge; their product is the cache in tokens, summed over engine cores), read by the
   KV budget and the working-set gate (scheduler.py); absent or ``None``: unknown.
4. Usage: ``usage`` with ``prompt_tokens_details.cached_tokens`` (``--enable-prompt-tokens-details``);
   the engine's queue time from the per-request ``metrics.queue_time_ms``
   (``--enable-per-request-metrics``; on the usage chunk when streaming).
5. Resume (base.py rule 6): supported. ``/v1/completions`` takes a token-id prompt and
   ``return_token_ids: true`` returns the prompt's and every chunk's generated token ids.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autellix.engine_adapters.accounting import Usage
from autellix.engine_adapters.admission import EngineLoad
from autellix.engine_adapters.base import (
    EngineAdapter,
    LoadProbeError,
    PrioritySupport,
    find_key,
    first_present,
    register_adapter,
    scan_prometheus,
)

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREEMPTIONS = ("vllm:num_preemptions_total", "vllm:num_preemptions")
CACHE_INFO = "vllm:cache_config_info"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_POLICY_TEXT = re.compile(r"""(?:scheduling_)?policy['"]?\s*[:=]\s*['"]?(fcfs|priority)\b""")


@register_adapter("vllm")
class VllmAdapter(EngineAdapter):
    """vLLM: load from Prometheus metrics, priority lower-first, queue time from per-request metrics."""

    load_paths = ("/metrics",)
    health_path = "/health"
    server_info_path = "/server_info?config_format=json"
    default_low_values_first = True
    supports_resume = True

    def parse_load(self, path: str, text: str) -> EngineLoad:
        samples = scan_prometheus(text, (RUNNING, WAITING, *KV_USAGE, *PREEMPTIONS))
        if RUNNING not in samples and WAITING not in samples:
            raise LoadProbeError(f"{path} has neither {RUNNING} nor {WAITING}")
        kv = first_present(samples, *KV_USAGE)
        preemptions = first_present(samples, *PREEMPTIONS)
        return EngineLoad(
            running=int(sum(samples.get(RUNNING, ()))),
            waiting=int(sum(samples.get(WAITING, ()))),
            kv_usage=max(kv) if kv else None,
            preemptions=sum(preemptions) if preemptions else None,
            kv_capacity_tokens=cache_capacity_tokens(text),
        )

    def detect_priority(self, status: int, text: str) -> PrioritySupport | None:
        if status != 200:
            return None
        policy: object = None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        scheduler = find_key(data, "scheduler_config")
        if isinstance(scheduler, Mapping):
            policy = scheduler.get("policy")
        if policy is None:
            policy = find_key(data, "scheduling_policy")
        if not isinstance(policy, str):
            match = _POLICY_TEXT.search(text)
            policy = match.group(1) if match else None
        if policy not in ("fcfs", "priority"):
            return None
        return PrioritySupport(enabled=policy == "priority", low_values_first=True)

    def read_usage(self, payload: Mapping[str, Any]) -> Usage | None:
        usage = super().read_usage(payload)
        metrics = payload.get("metrics")
        queue_ms = metrics.get("queue_time_ms") if isinstance(metrics, Mapping) else None
        if usage is None or isinstance(queue_ms, bool) or not isinstance(queue_ms, int | float):
            return usage
        if not math.isfinite(queue_ms) or queue_ms < 0:
            return usage
        return replace(usage, engine_queue_time=queue_ms / 1000.0)


def cache_capacity_tokens(text: str) -> int | None:
    """Rule 3: the KV cache size in tokens from ``vllm:cache_config_info``'s labels, None if not said."""
    total = 0
    for line in text.splitlines():
        if not line.startswith(CACHE_INFO + "{"):
            continue
        labels = dict(_LABEL.findall(line[len(CACHE_INFO) + 1 : line.rfind("}")]))
        try:
            blocks = int(labels.get("num_gpu_blocks", ""))
            size = int(labels.get("block_size", ""))
        except ValueError:
            continue
        if blocks > 0 and size > 0:
            total += blocks * size
    return total or None
