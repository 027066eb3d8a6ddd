"""Engine adapters: priority mapping and detection, load parsing, body rewrite, usage (pure functions)."""

from __future__ import annotations

import json

import pytest

from autellix.engine_adapters.admission import EngineLoad
from autellix.engine_adapters.base import (
    AdapterOptions,
    EngineAdapter,
    LoadProbeError,
    PrioritySupport,
    adapter_class,
    get_adapter,
    resolve_priority,
    scan_prometheus,
)
from autellix.engine_adapters.sglang import SglangAdapter
from autellix.engine_adapters.sim import SimAdapter
from autellix.engine_adapters.vllm import VllmAdapter

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
vllm:num_preemptions_total{engine="0",model_name="m"} 7.0
vllm:num_requests_running_total{engine="0"} 99.0
vllm:request_queue_time_seconds_bucket{le="+Inf",model_name="m"} 12.0
"""


def test_vllm_load_sums_engines_and_reads_total_suffixed_counters() -> None:
    load = VllmAdapter().parse_load("/metrics", VLLM_METRICS)
    assert load == EngineLoad(running=5, waiting=1, kv_usage=0.5, preemptions=7.0)


def test_vllm_load_falls_back_to_older_names() -> None:
    text = "vllm:num_requests_running 2\nvllm:num_requests_waiting 4\nvllm:gpu_cache_usage_perc 0.9\n"
    text += "vllm:num_preemptions 3\n"
    assert VllmAdapter().parse_load("/metrics", text) == EngineLoad(2, 4, 0.9, 3.0)


@pytest.mark.parametrize("text", ["", "# nothing\n", "other_metric 1\n", "<html>oops</html>"])
def test_vllm_load_without_the_gauges_is_an_error(text: str) -> None:
    with pytest.raises(LoadProbeError):
        VllmAdapter().parse_load("/metrics", text)


def test_prometheus_scan_ignores_prefix_names_comments_and_junk() -> None:
    text = 'a 1\na_total 2\na{x="1 }"} 3\n# a 9\na{y="2"} NaN\na{z="3"} 4 1700000000\nbad line\n'
    assert scan_prometheus(text, ["a"]) == {"a": [1.0, 3.0, 4.0]}


@pytest.mark.parametrize(
    "payload",
    [
        {"loads": [{"dp_rank": 0, "num_running_reqs": 3, "num_waiting_reqs": 2, "token_usage": 0.4},
                   {"dp_rank": 1, "num_running_reqs": 1, "num_waiting_reqs": 0, "token_usage": 0.6}]},
        [{"num_running_reqs": 3, "num_waiting_reqs": 2, "token_usage": 0.4},
         {"num_running_reqs": 1, "num_queue_reqs": 0, "token_usage": 0.6}],
    ],
)  # fmt: skip
def test_sglang_loads_in_both_shapes(payload: object) -> None:
    load = SglangAdapter().parse_load("/v1/loads", json.dumps(payload))
    assert load == EngineLoad(running=4, waiting=2, kv_usage=0.6)


def test_sglang_load_from_metrics() -> None:
    text = 'sglang:num_running_reqs{model_name="m"} 7\nsglang:num_queue_reqs{model_name="m"} 3\n'
    text += 'sglang:token_usage{model_name="m"} 0.28\n'
    assert SglangAdapter().parse_load("/metrics", text) == EngineLoad(7, 3, 0.28)


@pytest.mark.parametrize("text", ["not json", '{"loads": 3}', '{"version": "1"}', "[1, 2]"])
def test_sglang_bad_loads_are_errors(text: str) -> None:
    with pytest.raises(LoadProbeError):
        SglangAdapter().parse_load("/v1/loads", text)


@pytest.mark.parametrize(
    ("adapter", "low_first", "expected"),
    [
        (VllmAdapter(), True, [0, 1, 2, 3, 7]),
        (SimAdapter(), True, [0, 1, 2, 3, 7]),
        (SglangAdapter(), False, [7, 6, 5, 4, 0]),
        (SglangAdapter(AdapterOptions(low_priority_values_first=True)), True, [0, 1, 2, 3, 7]),
    ],
)
def test_priority_mapping_serves_level_zero_first(
    adapter: EngineAdapter, low_first: bool, expected: list[int]
) -> None:
    assert adapter.low_values_first() is low_first
    values = [adapter.engine_priority(level, 8, low_first) for level in (0, 1, 2, 3, 7)]
    assert values == expected
    best_first = sorted(values) if low_first else sorted(values, reverse=True)
    assert best_first == values  # the engine's own order equals our level order


def test_priority_mapping_clamps_out_of_range_levels() -> None:
    assert EngineAdapter.engine_priority(12, 8, True) == 7
    assert EngineAdapter.engine_priority(-1, 8, False) == 7
    assert EngineAdapter.engine_priority(0, 1, False) == 0


SGLANG_INFO = {
    "model_path": "m",
    "enable_priority_scheduling": True,
    "schedule_low_priority_values_first": True,
}


@pytest.mark.parametrize(
    ("adapter", "status", "text", "expected"),
    [
        (VllmAdapter(), 200, json.dumps({"vllm_config": {"scheduler_config": {"policy": "priority"}}}),
         PrioritySupport(True, True)),
        (VllmAdapter(), 200, json.dumps({"vllm_config": {"scheduler_config": {"policy": "fcfs"}}}),
         PrioritySupport(False, True)),
        (VllmAdapter(), 200, json.dumps({"vllm_config": "model='m', scheduler_config=SchedulerConfig("
                                         "policy='priority', max_num_seqs=8)"}), PrioritySupport(True, True)),
        (SimAdapter(), 200, json.dumps({"scheduling_policy": "fcfs"}), PrioritySupport(False, True)),
        (VllmAdapter(), 404, '{"detail": "Not Found"}', None),
        (VllmAdapter(), 200, '{"something": "else"}', None),
        (SglangAdapter(), 200, json.dumps(SGLANG_INFO), PrioritySupport(True, True)),
        (SglangAdapter(), 200, json.dumps({"enable_priority_scheduling": False}),
         PrioritySupport(False, False)),
        (SglangAdapter(), 200, "garbage", None),
        (SglangAdapter(), 500, json.dumps(SGLANG_INFO), None),
    ],
)  # fmt: skip
def test_priority_detection(
    adapter: EngineAdapter, status: int, text: str, expected: PrioritySupport | None
) -> None:
    assert adapter.detect_priority(status, text) == expected


@pytest.mark.parametrize(
    ("mode", "detected", "enabled"),
    [
        ("off", PrioritySupport(True), False),
        ("on", None, True),
        ("on", PrioritySupport(False), True),
        ("auto", None, False),  # unknown: never risk an FCFS engine
        ("auto", PrioritySupport(False), False),
        ("auto", PrioritySupport(True), True),
    ],
)
def test_resolve_priority(mode: str, detected: PrioritySupport | None, enabled: bool) -> None:
    decision = resolve_priority(mode, VllmAdapter(), detected)  # type: ignore[arg-type]
    assert decision.enabled is enabled and decision.reason


def test_sglang_direction_operator_setting_beats_detection_beats_default() -> None:
    detected = PrioritySupport(True, low_values_first=True)
    assert resolve_priority("auto", SglangAdapter(), detected).low_values_first is True
    assert resolve_priority("auto", SglangAdapter(), PrioritySupport(True)).low_values_first is False
    forced = SglangAdapter(AdapterOptions(low_priority_values_first=False))
    assert resolve_priority("auto", forced, detected).low_values_first is False


def test_rewrite_sets_priority_and_usage_without_touching_the_input() -> None:
    body = {"prompt": "x", "stream": True, "stream_options": {"continuous_usage_stats": False}, "priority": 9}
    original = json.loads(json.dumps(body))
    out = VllmAdapter().rewrite_body(body, priority=3, want_usage=True)
    assert out == {
        **original,
        "priority": 3,
        "stream_options": {"continuous_usage_stats": False, "include_usage": True},
    }
    assert body == original


@pytest.mark.parametrize(
    ("body", "priority", "want_usage"),
    [
        ({"prompt": "x"}, None, False),
        ({"prompt": "x", "priority": 2}, 2, False),
        ({"prompt": "x", "stream": True, "stream_options": {"include_usage": True}}, None, True),
    ],
)
def test_rewrite_returns_none_when_nothing_changes(
    body: dict[str, object], priority: int | None, want_usage: bool
) -> None:
    assert VllmAdapter().rewrite_body(body, priority=priority, want_usage=want_usage) is None


def test_a_callers_own_priority_is_removed_when_the_engine_gets_none_of_ours() -> None:
    body = {"prompt": "x", "priority": -100}
    assert VllmAdapter().rewrite_body(body, priority=None, want_usage=False) == {"prompt": "x"}
    assert body == {"prompt": "x", "priority": -100}
    assert VllmAdapter().rewrite_body(body, priority=4, want_usage=False) == {"prompt": "x", "priority": 4}


def test_no_priority_field_is_added_when_priority_is_none() -> None:
    out = SglangAdapter().rewrite_body({"prompt": "x", "stream": True}, priority=None, want_usage=True)
    assert out is not None and "priority" not in out


def test_usage_with_cached_tokens_and_vllm_queue_time() -> None:
    payload = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
        "metrics": {"queue_time_ms": 250.0},
    }
    usage = VllmAdapter().read_usage(payload)
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.output_tokens) == (100, 64, 7)
    assert usage.engine_queue_time == pytest.approx(0.25)
    sglang_usage = SglangAdapter().read_usage(payload)
    assert sglang_usage is not None and sglang_usage.engine_queue_time is None


@pytest.mark.parametrize(
    "payload",
    [{}, {"usage": None}, {"usage": "x"}],
)
def test_no_usage(payload: dict[str, object]) -> None:
    assert VllmAdapter().read_usage(payload) is None


def test_registry_finds_each_kind_by_name_and_rejects_unknown() -> None:
    assert adapter_class("vllm") is VllmAdapter
    assert adapter_class("sglang") is SglangAdapter
    assert isinstance(get_adapter("sim"), SimAdapter)
    for bad in ("tgi", "../etc", "Vllm", ""):
        with pytest.raises(ValueError, match="unknown engine kind"):
            adapter_class(bad)
