"""The simulated engine as a real process, driven with the openai SDK and raw HTTP."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.conftest import SimEngineFactory, metric_value

pytestmark = pytest.mark.integration

FAST = ("--time-scale", "0.01")


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_non_streaming_has_vllm_shape_and_exact_length(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    client = client_for(engine.url)
    reply = client.chat.completions.create(
        model="sim-llama",
        messages=[{"role": "user", "content": "Tell me about prefix caching in three words."}],
        max_tokens=17,
        extra_body={"ignore_eos": True},
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 17
    assert reply.usage.prompt_tokens > 5
    assert reply.choices[0].message.content


def test_streaming_matches_non_streaming_and_reports_usage(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    client = client_for(engine.url)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Stream me some words, please."}
    ]
    whole = client.chat.completions.create(
        model="sim-llama",
        messages=messages,
        max_tokens=12,
        extra_body={"ignore_eos": True},
    )
    stream = client.chat.completions.create(
        model="sim-llama",
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 12
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_completions_with_token_ids_and_prefix_cache_hits(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    prompt = list(range(100, 100 + 200))  # 200 tokens: 12 full blocks of 16
    body = {
        "model": "sim-llama",
        "prompt": prompt,
        "max_tokens": 5,
        "ignore_eos": True,
        "return_token_ids": True,
    }
    first = httpx.post(engine.url + "/v1/completions", json=body, timeout=30).json()
    second = httpx.post(engine.url + "/v1/completions", json=body, timeout=30).json()
    assert first["object"] == "text_completion"
    assert first["usage"]["prompt_tokens"] == 200
    assert len(first["choices"][0]["token_ids"]) == 5
    assert first["choices"][0]["token_ids"] == second["choices"][0]["token_ids"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # Whole blocks only, and never the full prompt (vLLM caps the hit at prompt - 1).
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 192


def test_tokenize_agrees_with_usage(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]
    count = httpx.post(engine.url + "/tokenize", json={"messages": messages}, timeout=10).json()["count"]
    reply = httpx.post(
        engine.url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 2}, timeout=30
    ).json()
    assert reply["usage"]["prompt_tokens"] == count
    models = httpx.get(engine.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["sim-llama"]


BAD_REQUESTS = [
    ("malformed json", "/v1/chat/completions", b"{not json", 400),
    ("not an object", "/v1/chat/completions", b"[1, 2]", 400),
    ("missing messages", "/v1/chat/completions", json.dumps({"model": "sim-llama"}).encode(), 400),
    ("missing prompt", "/v1/completions", json.dumps({"max_tokens": 3}).encode(), 400),
    (
        "max_tokens wrong type",
        "/v1/completions",
        json.dumps({"prompt": "hi", "max_tokens": "many"}).encode(),
        400,
    ),
    ("negative max_tokens", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": -1}).encode(), 400),
    ("non-integer priority", "/v1/completions", json.dumps({"prompt": "hi", "priority": 1.5}).encode(), 400),
    ("string priority", "/v1/completions", json.dumps({"prompt": "hi", "priority": "high"}).encode(), 400),
    (
        "prompt too long",
        "/v1/completions",
        json.dumps({"prompt": list(range(5000)), "max_tokens": 1}).encode(),
        400,
    ),
    ("unknown model", "/v1/completions", json.dumps({"model": "gpt-9", "prompt": "hi"}).encode(), 404),
    ("empty messages", "/v1/chat/completions", json.dumps({"messages": []}).encode(), 400),
]


def test_bad_input_gets_openai_errors_and_server_keeps_serving(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST, "--max-model-len", "4096")
    with httpx.Client(base_url=engine.url, timeout=10) as http:
        for name, path, raw, status in BAD_REQUESTS:
            reply = http.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert reply.status_code == status, name
            error = reply.json()["error"]
            assert error["message"] and error["code"] == status, name
        ok = http.post("/v1/completions", json={"prompt": "still alive?", "max_tokens": 3})
        assert ok.status_code == 200


def test_fcfs_server_ignores_integer_priority(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    reply = httpx.post(
        engine.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "priority": 7}, timeout=30
    )
    assert reply.status_code == 200


def _post_and_record(
    url: str, body: dict[str, object], name: str, order: list[str], lock: threading.Lock
) -> None:
    reply = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200
    with lock:
        order.append(name)


def _wait_for_waiting(url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if metric_value(httpx.get(url + "/metrics", timeout=5).text, "vllm:num_requests_waiting") >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"the engine never had {count} requests waiting")


def test_priority_policy_admits_lower_value_first(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(
        "--profile", "unit", "--time-scale", "0.01", "--scheduling-policy", "priority", "--max-num-seqs", "1"
    )
    order: list[str] = []
    lock = threading.Lock()
    threads = []
    # An endless streamed request holds the only running slot until we close it, however slow the machine,
    # and each queued request is seen waiting before the next is sent, so the arrival order is known.
    endless = {"prompt": "block", "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", engine.url + "/v1/completions", json=endless) as blocker,
    ):
        lines = blocker.iter_lines()  # kept: a discarded line iterator would close the stream
        assert next(line for line in lines if line.startswith("data:"))
        for waiting, (name, priority) in enumerate([("low-a", 10), ("low-b", 10), ("high", 0)], start=1):
            body = {"prompt": name, "max_tokens": 3, "ignore_eos": True, "priority": priority}
            thread = threading.Thread(target=_post_and_record, args=(engine.url, body, name, order, lock))
            thread.start()
            threads.append(thread)
            _wait_for_waiting(engine.url, waiting)
    for thread in threads:  # closing the stream aborted the blocker: the queue drains in priority order
        thread.join(timeout=60)
    assert order == ["high", "low-a", "low-b"]


def test_closed_connection_aborts_and_frees_capacity(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory("--profile", "unit", "--time-scale", "0.01", "--max-num-seqs", "1")
    body = {"prompt": "endless", "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", engine.url + "/v1/completions", json=body) as reply,
    ):
        lines = reply.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    # The stream is closed: the engine must drop the request and serve the next one promptly.
    deadline = time.monotonic() + 5
    running = -1.0
    while time.monotonic() < deadline:
        running = metric_value(
            httpx.get(engine.url + "/metrics", timeout=5).text, "vllm:num_requests_running"
        )
        if running == 0:
            break
        time.sleep(0.05)
    assert running == 0
    started = time.monotonic()
    reply2 = httpx.post(engine.url + "/v1/completions", json={"prompt": "next", "max_tokens": 2}, timeout=30)
    assert reply2.status_code == 200
    assert time.monotonic() - started < 5


def test_non_streaming_disconnect_aborts(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory("--profile", "unit", "--time-scale", "0.01", "--max-num-seqs", "1")
    body = {"prompt": "endless", "max_tokens": 30_000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(engine.url + "/v1/completions", json=body, timeout=0.5)
    deadline = time.monotonic() + 5
    running = -1.0
    while time.monotonic() < deadline:
        running = metric_value(
            httpx.get(engine.url + "/metrics", timeout=5).text, "vllm:num_requests_running"
        )
        if running == 0:
            break
        time.sleep(0.05)
    assert running == 0


def test_tokens_arrive_on_scaled_step_boundaries(sim_engine_factory: SimEngineFactory) -> None:
    # unit profile: one step = 1 simulated second; at time scale 0.02 that is 20 ms of wall time per token.
    engine = sim_engine_factory("--profile", "unit", "--time-scale", "0.02")
    started = time.monotonic()
    reply = httpx.post(
        engine.url + "/v1/completions",
        json={"prompt": "pace", "max_tokens": 20, "ignore_eos": True},
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert reply.status_code == 200
    assert elapsed >= 20 * 0.02 * 0.95


def test_metrics_use_vllm_names(sim_engine_factory: SimEngineFactory) -> None:
    engine = sim_engine_factory(*FAST)
    httpx.post(engine.url + "/v1/completions", json={"prompt": "count me", "max_tokens": 4}, timeout=30)
    text = httpx.get(engine.url + "/metrics", timeout=5).text
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
    ]:
        assert f"\n{name}" in text, name
    assert metric_value(text, "vllm:generation_tokens_total") >= 1
    assert 0.0 <= metric_value(text, "autellix_sim_engine_lag_seconds") < 60.0  # the driver's own health
