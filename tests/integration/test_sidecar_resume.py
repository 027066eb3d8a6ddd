"""Abort-and-resume live (``autellix sidecar --preempt``; relay.py rule 6), with real processes: the
sidecar in front of ``autellix sim-engine`` (unit profile: 10 ms a step, one token a step, one chunk a
token) behind a fixed window of one call, so the engine is full while the low-priority stream runs.

A low-priority program's long stream runs; top-level calls arrive; the sidecar stops the stream
(closes its engine connection), runs the new call, then resumes the stream from its prompt + generated
token ids. The client must read one uninterrupted stream: one id, every token once, the call's usage.
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
from tests.polling import wait_until

pytestmark = pytest.mark.integration

UNIT = ("--profile", "unit", "--time-scale", "0.01", "--max-num-seqs", "1")
SIDECAR = (
    "--engine-kind", "sim", "--window-mode", "fixed", "--max-in-flight", "1", "--tick-interval", "0.01",
)  # fmt: skip
PREEMPT = {"preempt": True, "preempt_params": {"min_run": 0.1}}
MESSAGES = [{"role": "user", "content": "tell me a long story"}]
PROMPT = "tell me a long story"
OUTPUT = 300
LOW = {protocol.PROGRAM_ID: "low", protocol.PROGRAM_SERVICE: "20"}  # level 6 of 8
HIGH = {protocol.PROGRAM_ID: "high", protocol.PROGRAM_SERVICE: "0"}


class LowStream(threading.Thread):
    """The low-priority program's stream, read in a thread: its events and when it ended."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.headers = url, path, {**LOW, **(headers or {})}
        self.events: list[bytes] = []
        self.status = 0
        self.done_at = 0.0

    def run(self) -> None:
        body: dict[str, Any] = {
            "max_tokens": OUTPUT,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update({"messages": MESSAGES} if "chat" in self.path else {"prompt": PROMPT})
        with httpx.stream("POST", self.url + self.path, json=body, headers=self.headers, timeout=30) as reply:
            self.status = reply.status_code
            buffer = b""
            for chunk in reply.iter_bytes():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n\n")
                self.events.extend(complete)
        self.done_at = time.monotonic()

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(e[len(b"data: ") :]) for e in self.events if e.startswith(b"data: {")]


def metric(url: str, name: str, *labels: str) -> float:
    return metric_value(httpx.get(url + "/metrics", timeout=10).text, name, labels)


def top_level_call(url: str, tokens: int = 5) -> float:
    """A top-level program's short call; when it came back."""
    reply = httpx.post(
        url + "/v1/completions",
        json={"prompt": "quick", "max_tokens": tokens, "ignore_eos": True},
        headers=HIGH,
        timeout=30,
    )
    assert reply.status_code == 200
    return time.monotonic()


def prompt_tokens(engine_url: str, path: str) -> int:
    body: dict[str, Any] = {
        "max_tokens": 1,
        **({"messages": MESSAGES} if "chat" in path else {"prompt": PROMPT}),
    }
    return int(httpx.post(engine_url + path, json=body, timeout=10).json()["usage"]["prompt_tokens"])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_stream_stopped_twice_reaches_the_client_whole_with_the_calls_usage(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory, path: str
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, *SIDECAR, config=PREEMPT)
    low = LowStream(sidecar.url, path)
    low.start()
    assert wait_until(lambda: metric(sidecar.url, "autellix_sidecar_running") == 1, timeout=10)
    first_done = top_level_call(sidecar.url)  # stops the stream once it has run 0.1 s
    assert wait_until(lambda: metric(sidecar.url, "autellix_sidecar_resumes_total") == 1, timeout=10)
    second_done = top_level_call(sidecar.url)  # and again, once the resumed stream has run 0.1 s
    low.join(30)
    assert low.status == 200 and second_done < low.done_at and first_done < low.done_at

    events = low.events
    assert events[-1] == b"data: [DONE]"
    report = protocol.decode_report(events[-2][len(protocol.REPORT_SSE_PREFIX) :])
    chunks = low.chunks()
    kind = "chat.completion.chunk" if "chat" in path else "text_completion"
    # one stream: one id, one created, one model
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        (chunks[0]["id"], kind, chunks[0]["created"], "sim-llama")
    }
    if "chat" in path:
        assert chunks.pop(0)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0] for c in chunks if c["choices"]]
    assert len(content) == OUTPUT  # one token a chunk: none lost, none twice
    assert all(choice["delta"]["content"] if "chat" in path else choice["text"] for choice in content)
    assert [choice["finish_reason"] for choice in content][-2:] == [None, "length"]
    # what only the sidecar asked for stays hidden
    assert all(c.get("prompt_token_ids") is None for c in chunks)
    assert all(
        choice.get("token_ids") is None and choice.get("prompt_token_ids") is None for choice in content
    )
    expected_prompt = prompt_tokens(engine.url, path)
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (expected_prompt, OUTPUT)
    assert usage["total_tokens"] == expected_prompt + OUTPUT
    assert (report.ok, report.prompt_tokens, report.output_tokens) == (True, expected_prompt, OUTPUT)
    assert report.queue_wait > 0  # the time it was stopped counts as wait

    assert metric(sidecar.url, "autellix_sidecar_preemptions_total") == 2
    assert metric(sidecar.url, "autellix_sidecar_resumes_total") == 2
    assert metric(sidecar.url, "autellix_sidecar_aborts_total", 'where="engine"') == 0
    assert metric(sidecar.url, "autellix_sidecar_aborts_total", 'where="queue"') == 0
    assert metric(sidecar.url, "autellix_sidecar_running") == 0
    assert metric(sidecar.url, "autellix_sidecar_requests_total", 'outcome="ok"') == 3


def test_a_deadline_that_passes_while_the_stream_is_stopped_cuts_it_with_an_error_event(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, *SIDECAR, config=PREEMPT)
    low = LowStream(sidecar.url, "/v1/chat/completions", {"X-Request-Timeout": "2"})  # 300 tokens: 3 s
    low.start()
    assert wait_until(lambda: metric(sidecar.url, "autellix_sidecar_running") == 1, timeout=10)
    top_level_call(sidecar.url, tokens=400)  # 4 s: the stopped stream's deadline passes meanwhile
    low.join(30)
    assert low.status == 200
    *_, error, done, last = low.events  # relay.py rule 5: the API's error event, then the report
    assert b"deadline passed" in error and done == b"data: [DONE]"
    report = protocol.decode_report(last[len(protocol.REPORT_SSE_PREFIX) :])
    assert not report.ok and 0 < report.output_tokens < OUTPUT
    assert report.queue_wait > report.exec_time  # stopped most of its second: wait, not execution
    assert metric(sidecar.url, "autellix_sidecar_preemptions_total") == 1
    assert metric(sidecar.url, "autellix_sidecar_resumes_total") == 0
    assert metric(sidecar.url, "autellix_sidecar_rejected_total", 'reason="deadline_midstream"') == 1
    assert metric(sidecar.url, "autellix_sidecar_running") == 0


def test_without_the_flag_nothing_is_stopped(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, *SIDECAR)
    low = LowStream(sidecar.url, "/v1/chat/completions")
    low.start()
    assert wait_until(lambda: metric(sidecar.url, "autellix_sidecar_running") == 1, timeout=10)
    top_level_call(sidecar.url)
    low.join(30)
    assert low.status == 200 and low.events[-1] == b"data: [DONE]"
    assert metric(sidecar.url, "autellix_sidecar_preemptions_total") == 0
    assert metric(sidecar.url, "autellix_sidecar_resumes_total") == 0
