"""``sglang``: the adapter for SGLang's server (reference.md §6).

Theory of operation (the rules of base.py, as SGLang answers them)
------------------------------------------------------------------
1. Load: ``GET /v1/loads`` first (``{"loads": [{"num_running_reqs", "num_waiting_reqs",
   "token_usage", ...}, ...]}``, one entry per data-parallel rank; a bare object or list is read too),
   summed over ranks, KV usage as the maximum. If the server has no ``/v1/loads`` (404) the shell
   moves to ``GET /metrics`` (needs ``--enable-metrics``): ``sglang:num_running_reqs``,
   ``sglang:num_queue_reqs``, ``sglang:token_usage``.
2. Priority: with ``--enable-priority-scheduling`` SGLang serves *higher* values first, unless it runs
   ``--schedule-low-priority-values-first``. ``GET /get_server_info`` returns the server arguments,
   so ``auto`` detects both whether priority is on and its direction; the operator's
   ``sglang_low_priority_values_first`` setting overrides the detected direction. Our levels differ by
   at most K-1 = 7 by default, below SGLang's default preemption threshold of 10, so priorities order
   admission without making SGLang preempt running calls.
3. Usage: ``usage.prompt_tokens_details.cached_tokens`` (``--enable-cache-report``).
4. No abort-and-resume (base.py rule 6; the sidecar refuses ``--preempt``): SGLang preempts running
   requests for waiting ones by itself, natively and without recomputing from scratch (priority
   preemption, on by default with ``--enable-priority-scheduling``, for a priority gap above
   ``--priority-scheduling-preemption-threshold``). Our default levels stay within its default
   threshold (rule 2); to have SGLang preempt for our levels, start it with a threshold below the
   level gap wanted (e.g. 1 or 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autellix.engine_adapters.admission import EngineLoad
from autellix.engine_adapters.base import (
    EngineAdapter,
    LoadProbeError,
    PrioritySupport,
    find_key,
    first_present,
    load_json,
    register_adapter,
    scan_prometheus,
)

RUNNING = "sglang:num_running_reqs"
WAITING = "sglang:num_queue_reqs"
TOKEN_USAGE = "sglang:token_usage"


def _number(item: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@register_adapter("sglang")
class SglangAdapter(EngineAdapter):
    """SGLang: load from /v1/loads (or metrics), priority higher-first unless told otherwise."""

    load_paths = ("/v1/loads", "/metrics")
    health_path = "/health"
    server_info_path = "/get_server_info"
    default_low_values_first = False

    def parse_load(self, path: str, text: str) -> EngineLoad:
        if path.startswith("/metrics"):
            return self._from_metrics(path, text)
        data = load_json(text, path)
        items: Any = data.get("loads", data) if isinstance(data, Mapping) else data
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list):
            raise LoadProbeError(f"{path}: expected a list of loads")
        running = waiting = 0.0
        seen = False
        usages: list[float] = []
        for item in items:
            if not isinstance(item, Mapping):
                continue
            run = _number(item, "num_running_reqs")
            wait = _number(item, "num_waiting_reqs", "num_queue_reqs")
            if run is None and wait is None:
                continue
            seen = True
            running += run or 0.0
            waiting += wait or 0.0
            usage = _number(item, "token_usage")
            if usage is not None:
                usages.append(usage)
        if not seen:
            raise LoadProbeError(f"{path} has no num_running_reqs / num_waiting_reqs")
        return EngineLoad(int(running), int(waiting), max(usages) if usages else None)

    def _from_metrics(self, path: str, text: str) -> EngineLoad:
        samples = scan_prometheus(text, (RUNNING, WAITING, TOKEN_USAGE))
        if RUNNING not in samples and WAITING not in samples:
            raise LoadProbeError(
                f"{path} has neither {RUNNING} nor {WAITING} (run SGLang with --enable-metrics)"
            )
        usage = first_present(samples, TOKEN_USAGE)
        return EngineLoad(
            running=int(sum(samples.get(RUNNING, ()))),
            waiting=int(sum(samples.get(WAITING, ()))),
            kv_usage=max(usage) if usage else None,
        )

    def detect_priority(self, status: int, text: str) -> PrioritySupport | None:
        if status != 200:
            return None
        try:
            data = load_json(text, "server info")
        except LoadProbeError:
            return None
        enabled = find_key(data, "enable_priority_scheduling")
        if not isinstance(enabled, bool):
            return None
        low_first = find_key(data, "schedule_low_priority_values_first")
        return PrioritySupport(enabled, low_first if isinstance(low_first, bool) else False)
