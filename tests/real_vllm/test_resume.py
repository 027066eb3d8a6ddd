"""Abort-and-resume against a real vLLM (``autellix sidecar --preempt``; relay.py rule 6).

The sidecar admits one call at a time (a fixed window of one), so from its point of view the engine is
full while a low-priority stream runs. A top-level call arrives; the sidecar closes the stream's
connection (vLLM aborts the request), runs the new call, then resumes the stream as a
``/v1/completions`` request whose prompt is the chat prompt's token ids (vLLM returned them on the role
chunk) plus the tokens generated so far. With greedy decoding the resumed stream must read exactly as
the uninterrupted one: the same text, token for token, under the same id, with the call's usage.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from autellix.engine_adapters import protocol
from tests.polling import wait_until
from tests.real_vllm.conftest import VllmServer, metric_value
from tests.services import ServiceFactory

pytestmark = pytest.mark.real_vllm

OUTPUT = 1200  # tokens: seconds of decoding on this machine, so the stop falls mid-stream
WINDOW_OF_ONE = ("--window-mode", "fixed", "--max-in-flight", "1", "--tick-interval", "0.02")


def chat_body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "tell me a long story about a tool-using agent"}],
        "max_tokens": OUTPUT,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def running(url: str) -> float:
    return metric_value(httpx.get(url + "/metrics", timeout=30).text, "autellix_sidecar_running")


def read_stream(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[bytes]:
    events: list[bytes] = []
    with (
        httpx.Client(timeout=180) as http,
        http.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        buffer = b""
        for chunk in reply.iter_bytes():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            events.extend(complete)
    return events


def chunks_of(events: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(e[len(b"data: ") :]) for e in events if e.startswith(b"data: {")]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def engine_idle(url: str) -> bool:
    text = httpx.get(url + "/metrics", timeout=30).text
    return (
        metric_value(text, "vllm:num_requests_running") + metric_value(text, "vllm:num_requests_waiting") == 0
    )


def test_a_stream_preempted_in_vllm_resumes_token_for_token(
    tiny_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    # The tiny server is shared with the rest of the tier: calls an earlier test left running would hold
    # the sidecar's one-call window (its KV budget reads the engine's usage) for as long as they run.
    assert wait_until(lambda: engine_idle(tiny_vllm.url), timeout=240), "vLLM still runs earlier calls"
    body = chat_body(tiny_vllm.model)
    uninterrupted = chunks_of(read_stream(tiny_vllm.url, body, {}))

    sidecar = sidecar_factory(
        tiny_vllm.url, *WINDOW_OF_ONE, config={"preempt": True, "preempt_params": {"min_run": 0.1}}
    )
    result: dict[str, Any] = {}

    def low() -> None:
        low_program = {protocol.PROGRAM_ID: "low", protocol.PROGRAM_SERVICE: "20"}
        result["events"] = read_stream(sidecar.url, body, low_program)
        result["done_at"] = time.monotonic()

    thread = threading.Thread(target=low, daemon=True)
    thread.start()
    # Once the stream runs (vLLM's chunks can reach a client in bursts, so not its first bytes), and a
    # little more, so that it has run past the minimum quantum.
    seen = wait_until(lambda: running(sidecar.url) == 1 or not thread.is_alive(), timeout=120)
    if seen and not thread.is_alive():
        pytest.skip("the stream ended before it was seen running: the machine decoded too fast")
    assert seen, httpx.get(sidecar.url + "/metrics", timeout=30).text[-3000:]
    time.sleep(0.5)
    high = httpx.post(
        sidecar.url + "/v1/completions",
        json={"model": tiny_vllm.model, "prompt": "quick", "max_tokens": 3, "ignore_eos": True},
        headers={protocol.PROGRAM_ID: "high", protocol.PROGRAM_SERVICE: "0"},
        timeout=120,
    )
    high_done = time.monotonic()
    thread.join(180)
    assert high.status_code == 200
    metrics = httpx.get(sidecar.url + "/metrics", timeout=30).text
    if metric_value(metrics, "autellix_sidecar_preemptions_total") == 0:
        pytest.skip("the stream ended before the top-level call arrived: the machine decoded too fast")
    assert high_done < result["done_at"]
    assert metric_value(metrics, "autellix_sidecar_resumes_total") >= 1

    events: list[bytes] = result["events"]
    assert events[-1] == b"data: [DONE]" and events[-2].startswith(protocol.REPORT_SSE_PREFIX)
    report = protocol.decode_report(events[-2][len(protocol.REPORT_SSE_PREFIX) :])
    chunks = chunks_of(events)
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        (chunks[0]["id"], "chat.completion.chunk", chunks[0]["created"], tiny_vllm.model)
    }
    assert all(c.get("prompt_token_ids") is None for c in chunks)
    assert all(c["choices"][0].get("token_ids") is None for c in chunks if c["choices"])
    want, got = uninterrupted[-1]["usage"], chunks[-1]["usage"]
    assert (got["prompt_tokens"], got["completion_tokens"]) == (want["prompt_tokens"], OUTPUT)
    assert (report.ok, report.prompt_tokens, report.output_tokens) == (True, want["prompt_tokens"], OUTPUT)
    assert text_of(chunks) == text_of(uninterrupted)  # greedy: the resumed call goes on where it stopped
