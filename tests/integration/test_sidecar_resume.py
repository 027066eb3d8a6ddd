"""Abort-and-resume live (``autellix sidecar --preempt``; relay.py rule 6), with real processes: the
sidecar in front of ``autellix sim-engine`` (unit profile: 10 ms a step, one token a step, a batch of
one, so the engine is full while the low-priority stream runs).

A low-priority program's long chat stream runs; a top-level call arrives; the sidecar stops the stream
(closes its engine connection), runs the new call, then resumes the stream from its prompt + generated
token ids. The client must read one uninterrupted stream: one id, every token, the call's usage.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from autellix.engine_adapters import protocol
from tests.integration.conftest import SidecarFactory, SimEngineFactory, metric_value

pytestmark = pytest.mark.integration

UNIT = ("--profile", "unit", "--time-scale", "0.01", "--max-num-seqs", "1")
SIDECAR = (
    "--engine-kind", "sim", "--window-mode", "fixed", "--max-in-flight", "1", "--tick-interval", "0.01",
)  # fmt: skip
PREEMPT = {"preempt": True, "preempt_params": {"min_run": 0.1}}
MESSAGES = [{"role": "user", "content": "tell me a long story"}]
OUTPUT = 120


def low_priority_stream(url: str, started: threading.Event, out: dict[str, Any]) -> None:
    body = {
        "model": "sim-llama",
        "messages": MESSAGES,
        "max_tokens": OUTPUT,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {protocol.PROGRAM_ID: "low", protocol.PROGRAM_SERVICE: "20"}  # level 6 of 8
    events: list[bytes] = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as reply:
        out["status"] = reply.status_code
        buffer = b""
        for chunk in reply.iter_bytes():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            events.extend(complete)
            if len(events) >= 10:
                started.set()
    out["events"] = events
    out["done_at"] = time.monotonic()


def test_a_preempted_stream_reaches_the_client_whole_with_the_calls_usage(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, *SIDECAR, config=PREEMPT)
    direct = httpx.post(
        engine.url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1}, timeout=10
    ).json()
    prompt_tokens = direct["usage"]["prompt_tokens"]

    started = threading.Event()
    low: dict[str, Any] = {}
    thread = threading.Thread(target=low_priority_stream, args=(sidecar.url, started, low))
    thread.start()
    assert started.wait(20), "the low-priority stream never got going"
    high = httpx.post(
        sidecar.url + "/v1/completions",
        json={"prompt": "quick", "max_tokens": 5, "ignore_eos": True},
        headers={protocol.PROGRAM_ID: "high", protocol.PROGRAM_SERVICE: "0"},
        timeout=30,
    )
    high_done = time.monotonic()
    thread.join(30)
    assert high.status_code == 200 and low["status"] == 200
    assert high_done < low["done_at"]  # it ran while the stream was stopped, not after it

    events: list[bytes] = low["events"]
    assert events[-1] == b"data: [DONE]"
    report = protocol.decode_report(events[-2][len(protocol.REPORT_SSE_PREFIX) :])
    chunks = [json.loads(e[len(b"data: ") :]) for e in events if e.startswith(b"data: {")]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}  # one stream: one id, one created, one model
    assert {(c["object"], c["created"], c["model"]) for c in chunks} == {
        ("chat.completion.chunk", chunks[0]["created"], "sim-llama")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks[1:] if c["choices"]]
    assert len(content) == OUTPUT  # the sim engine streams one token a chunk: none lost, none twice
    assert all(c["choices"][0]["delta"]["content"] for c in content)
    assert [c["choices"][0]["finish_reason"] for c in content][-2:] == [None, "length"]
    assert all(c.get("prompt_token_ids") is None for c in chunks)  # asked for by the sidecar: hidden
    assert all(c["choices"][0].get("token_ids") is None for c in content)
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens, OUTPUT)
    assert usage["total_tokens"] == prompt_tokens + OUTPUT
    assert (report.ok, report.prompt_tokens, report.output_tokens) == (True, prompt_tokens, OUTPUT)
    assert report.queue_wait > 0  # the time it was stopped counts as wait

    metrics = httpx.get(sidecar.url + "/metrics").text
    assert metric_value(metrics, "autellix_sidecar_preemptions_total") >= 1
    assert metric_value(metrics, "autellix_sidecar_resumes_total") >= 1
    assert metric_value(metrics, "autellix_sidecar_aborts_total", ['where="engine"']) == 0
    assert metric_value(metrics, "autellix_sidecar_aborts_total", ['where="queue"']) == 0
    assert metric_value(metrics, "autellix_sidecar_running") == 0


def test_without_the_flag_nothing_is_stopped(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, *SIDECAR)
    started = threading.Event()
    low: dict[str, Any] = {}
    thread = threading.Thread(target=low_priority_stream, args=(sidecar.url, started, low))
    thread.start()
    assert started.wait(20)
    high = httpx.post(
        sidecar.url + "/v1/completions",
        json={"prompt": "quick", "max_tokens": 5, "ignore_eos": True},
        headers={protocol.PROGRAM_ID: "high", protocol.PROGRAM_SERVICE: "0"},
        timeout=30,
    )
    thread.join(30)
    assert high.status_code == 200 and low["status"] == 200
    metrics = httpx.get(sidecar.url + "/metrics").text
    assert metric_value(metrics, "autellix_sidecar_preemptions_total") == 0
    assert metric_value(metrics, "autellix_sidecar_resumes_total") == 0
