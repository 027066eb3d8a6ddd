"""``autellix sidecar --engine-kind vllm`` in front of a real vLLM CPU server (the tiny model, FCFS).

The openai SDK talks to the sidecar as it would to vLLM: chat and completions, streamed and not. The
sidecar must pass answers through unchanged, report what vLLM counted (prompt, cached and output
tokens), read vLLM 0.32's real ``/metrics``, and never send ``priority`` to a server it cannot prove
runs the priority policy (this server has no dev mode, so its ``/server_info`` is a 404).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from autellix.engine_adapters.protocol import REPORT_HEADER, REPORT_SSE_PREFIX, decode_report
from autellix.engine_adapters.vllm import VllmAdapter
from tests.polling import wait_until
from tests.real_vllm.conftest import VllmServer, metric_value
from tests.services import ServiceFactory

pytestmark = pytest.mark.real_vllm

# Prefix-cache blocks of vLLM's CPU build are 128 tokens: a shared prefix must span whole blocks to hit.
LONG_PREFIX = " ".join(f"step {i} of the agent reads the tool result" for i in range(60))


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_and_completions_through_the_sidecar_with_the_openai_sdk(
    tiny_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    client = sdk(sidecar_factory(tiny_vllm.url).url)
    model = tiny_vllm.model
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=7,
        extra_body={"ignore_eos": True},
    )
    assert chat.object == "chat.completion" and chat.model == model
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 7

    completion = client.completions.create(
        model=model, prompt="the agent calls a tool", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert completion.object == "text_completion"
    assert completion.usage is not None and completion.usage.completion_tokens == 5

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream to me"}],
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9

    # A stream that did not ask for usage gets none, although the sidecar asked vLLM for it.
    plain = list(
        client.completions.create(
            model=model, prompt="count quietly", max_tokens=4, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert all(chunk.usage is None for chunk in plain)
    assert [c.choices[0].finish_reason for c in plain if c.choices][-1] == "length"


def test_reports_carry_vllms_token_counts_including_cached_tokens(
    tiny_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    sidecar = sidecar_factory(tiny_vllm.url)
    body = {"model": tiny_vllm.model, "prompt": LONG_PREFIX, "max_tokens": 3, "ignore_eos": True}
    hits_before = metric_value(tiny_vllm.metrics(), "vllm:prefix_cache_hits_total")
    with httpx.Client(timeout=60) as http:
        first = http.post(sidecar.url + "/v1/completions", json=body)
        second = http.post(sidecar.url + "/v1/completions", json=body)
        streamed = http.post(
            sidecar.url + "/v1/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert first.status_code == second.status_code == streamed.status_code == 200
    usage = second.json()["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert usage["prompt_tokens"] > 256
    assert cached > 0 and cached % 128 == 0, usage
    report = decode_report(second.headers[REPORT_HEADER])
    assert (report.prompt_tokens, report.cached_tokens, report.output_tokens) == (
        usage["prompt_tokens"],
        cached,
        3,
    )
    assert report.ok and report.exec_time > 0
    # Streaming: the report is an SSE comment before [DONE]; vLLM's usage chunk is passed on.
    lines = streamed.content.split(b"\n")
    comment = next(line for line in lines if line.startswith(REPORT_SSE_PREFIX))
    stream_report = decode_report(comment[len(REPORT_SSE_PREFIX) :])
    usage_chunk = next(
        json.loads(line[6:]) for line in lines if line.startswith(b"data: {") and b'"usage":{' in line
    )
    assert stream_report.cached_tokens == usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert stream_report.cached_tokens > 0 and stream_report.output_tokens == 3
    hits_after = metric_value(tiny_vllm.metrics(), "vllm:prefix_cache_hits_total")
    assert hits_after - hits_before >= cached + stream_report.cached_tokens


def metrics_page(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=5).text


def test_the_vllm_adapter_reads_this_versions_metrics(
    tiny_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    text = tiny_vllm.metrics()
    load = VllmAdapter().parse_load("/metrics", text)
    assert load.running == 0 and load.waiting == 0
    assert load.kv_usage is not None and 0.0 <= load.kv_usage <= 1.0
    assert load.preemptions is not None  # vllm:num_preemptions_total, with the _total suffix
    # The sidecar's probe reads the same page and republishes what it saw.
    sidecar = sidecar_factory(tiny_vllm.url, "--probe-interval", "0.05")

    def probed() -> bool:
        page = httpx.get(sidecar.url + "/metrics", timeout=5).text
        return "autellix_sidecar_engine_kv_usage" in page

    assert wait_until(probed, timeout=10)
    page = httpx.get(sidecar.url + "/metrics", timeout=5).text
    assert metric_value(page, "autellix_sidecar_engine_running") == 0
    assert metric_value(page, "autellix_sidecar_probe_failures_total") == 0
    # The KV cache's size in tokens comes from vllm:cache_config_info (num_gpu_blocks x block_size);
    # with it the working-set gate (on by default) weighs programs, and reports carry its share.
    capacity = load.kv_capacity_tokens
    assert capacity is not None and capacity > 1000
    assert wait_until(lambda: "autellix_sidecar_kv_capacity_tokens" in metrics_page(sidecar.url), 10)
    assert metric_value(metrics_page(sidecar.url), "autellix_sidecar_kv_capacity_tokens") == capacity
    body = {"model": tiny_vllm.model, "prompt": "hello " * 50, "max_tokens": 4, "ignore_eos": True}
    reply = httpx.post(sidecar.url + "/v1/completions", json=body, timeout=60)
    report = decode_report(reply.headers[REPORT_HEADER])
    # The report is written while the call is still in the gate, where a prompt the proxy sent no
    # estimate for weighs characters / 4 (300 / 4) until the engine's usage replaces it at leave.
    held = report.resident * capacity if report.resident is not None else 0.0
    assert 0 < held <= max(report.prompt_tokens, 300 // 4) + 4 + 16


def test_priority_is_never_sent_to_a_server_that_cannot_prove_its_policy(
    tiny_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    # vLLM 0.32 serves /server_info only with VLLM_SERVER_DEV_MODE=1; this server runs without it.
    info = httpx.get(tiny_vllm.url + "/server_info?config_format=json", timeout=10)
    assert info.status_code == 404
    sidecar = sidecar_factory(tiny_vllm.url, "--engine-priority", "auto", "--probe-interval", "0.05")
    assert wait_until(lambda: "engine priority field" in sidecar.log_tail(200), timeout=10)
    assert "engine priority field: not sent (engine policy unknown: treated as FCFS)" in sidecar.log_tail(200)
    page = httpx.get(sidecar.url + "/metrics", timeout=5).text
    assert metric_value(page, "autellix_sidecar_engine_priority_enabled") == 0
    # Calls still work, and an FCFS vLLM 0.32 silently ignores an integer priority (reference.md §6).
    reply = httpx.post(
        tiny_vllm.url + "/v1/completions",
        json={"model": tiny_vllm.model, "prompt": "x", "max_tokens": 2, "priority": 5},
        timeout=30,
    )
    assert reply.status_code == 200
