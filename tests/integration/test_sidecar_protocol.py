"""The sidecar's wire behaviour with real processes: reports, streaming, usage, disconnects, errors,
and what it sends an engine (priority only to a priority engine, none of our headers)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from autellix.engine_adapters import protocol
from autellix.launch import free_port
from tests.integration.conftest import SidecarFactory, SimEngineFactory, metric_value
from tests.integration.recording import LoopbackApp

pytestmark = pytest.mark.integration

UNIT = ("--profile", "unit", "--time-scale", "0.01")


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def metrics_of(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=5).text


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_report_reaches_the_client_and_the_sdk_sees_an_unchanged_api(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim")
    client = sdk(sidecar.url)
    headers = {protocol.PROGRAM_ID: "p1", protocol.CALL_ID: "call-42"}
    raw = client.completions.with_raw_response.create(
        model="sim-llama",
        prompt=list(range(100, 300)),
        max_tokens=7,
        extra_body={"ignore_eos": True},
        extra_headers=headers,
    )
    reply = raw.parse()
    report = protocol.decode_report(raw.headers["x-autellix-report"])
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert (report.call_id, report.ok, report.output_tokens, report.prompt_tokens) == (
        "call-42",
        True,
        7,
        200,
    )
    assert 7 * 0.01 * 0.9 <= report.exec_time < 1.0  # seven engine steps of 10 ms
    assert 0 <= report.queue_wait < 0.1
    assert [k for k in raw.headers if k.lower().startswith("x-autellix")] == ["x-autellix-report"]
    again = protocol.decode_report(
        client.completions.with_raw_response.create(
            model="sim-llama", prompt=list(range(100, 300)), max_tokens=2, extra_headers=headers
        ).headers["x-autellix-report"]
    )
    assert again.cached_tokens == 192  # 12 full blocks of 16 reused: read from usage.prompt_tokens_details

    # Streaming through the SDK: the same text as directly from the engine; no usage unless asked.
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Stream me a few words."}]
    direct = "".join(
        c.choices[0].delta.content or ""
        for c in sdk(engine.url).chat.completions.create(
            model="sim-llama", messages=messages, max_tokens=6, stream=True, extra_body={"ignore_eos": True}
        )
    )
    chunks = list(
        client.chat.completions.create(
            model="sim-llama", messages=messages, max_tokens=6, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == direct
    assert all(c.choices and c.usage is None for c in chunks)
    with_usage = list(
        client.chat.completions.create(
            model="sim-llama",
            messages=messages,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 6
    models = client.models.list()
    assert [m.id for m in models.data] == ["sim-llama"]


def test_a_gated_sidecars_reports_carry_its_working_set(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    plain = sidecar_factory(engine.url, "--engine-kind", "sim", "--working-set", "off")
    gated = sidecar_factory(engine.url, "--engine-kind", "sim", "--kv-capacity-tokens", "10000")
    body = {"model": "sim-llama", "prompt": list(range(100, 300)), "max_tokens": 5, "ignore_eos": True}
    headers = {protocol.PROGRAM_ID: "p-resident"}
    reply = httpx.post(gated.url + "/v1/completions", json=body, headers=headers, timeout=30)
    report = protocol.decode_report(reply.headers["x-autellix-report"])
    # the program stays resident after its call (its TTL): 200 prompt + 5 output tokens of 10,000
    assert report.resident is not None and 0.02 <= report.resident <= 0.03
    reply = httpx.post(plain.url + "/v1/completions", json=body, headers=headers, timeout=30)
    assert protocol.decode_report(reply.headers["x-autellix-report"]).resident is None


def test_stream_carries_the_report_as_a_comment_just_before_done(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim")
    body = {"prompt": "count with me", "max_tokens": 5, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", sidecar.url + "/v1/completions", json=body, headers={protocol.CALL_ID: "s1"}
        ) as reply,
    ):
        assert not [k for k in reply.headers if k.lower().startswith("x-autellix")]
        lines = [line for line in reply.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith(protocol.REPORT_SSE_PREFIX.decode())
    report = protocol.decode_report(lines[-2][len(protocol.REPORT_SSE_PREFIX) :])
    assert (report.call_id, report.output_tokens, report.ok) == ("s1", 5, True)
    assert report.prompt_tokens > 0 and 0.04 <= report.exec_time < 1.0
    payloads = [json.loads(line[len("data: ") :]) for line in lines[:-2]]
    assert len(payloads) == 5 and all(p["choices"] and "usage" not in p for p in payloads)


def test_a_client_that_goes_away_frees_its_place_in_the_queue_and_in_the_engine(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT, "--max-num-seqs", "1")
    sidecar = sidecar_factory(
        engine.url, "--engine-kind", "sim", "--window-mode", "fixed", "--max-in-flight", "1"
    )
    endless = {"prompt": "endless", "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", sidecar.url + "/v1/completions", json=endless) as running:
            lines = running.iter_lines()  # keep it referenced: a collected line iterator closes the stream
            assert next(line for line in lines if line.startswith("data:"))
            # A second call waits in our queue; its client gives up.
            with pytest.raises(httpx.ReadTimeout):
                http.post(sidecar.url + "/v1/completions", json={"prompt": "w", "max_tokens": 2}, timeout=0.4)
            assert wait_for(
                lambda: (
                    metric_value(metrics_of(sidecar.url), "autellix_sidecar_aborts_total", ['where="queue"'])
                    == 1
                )
            )
            text = metrics_of(sidecar.url)
            assert metric_value(text, "autellix_sidecar_queue_waiting", ['level="0"']) == 0
            assert metric_value(text, "autellix_sidecar_running") == 1
        # The streaming client closed its connection: the call must leave the engine too.
        assert wait_for(lambda: metric_value(metrics_of(engine.url), "vllm:num_requests_running") == 0)
        assert wait_for(lambda: metric_value(metrics_of(sidecar.url), "autellix_sidecar_running") == 0)
        assert metric_value(metrics_of(sidecar.url), "autellix_sidecar_aborts_total", ['where="engine"']) == 1
        started = time.monotonic()
        after = http.post(sidecar.url + "/v1/completions", json={"prompt": "next", "max_tokens": 2})
        assert after.status_code == 200 and time.monotonic() - started < 2


def test_bad_input_and_engine_errors_are_openai_errors_and_the_sidecar_keeps_serving(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim", "--max-body-bytes", "4096")
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("malformed json", b"{not json", {}, 400),
        ("not an object", b"[1, 2]", {}, 400),
        ("bad service header", b'{"prompt": "x"}', {protocol.PROGRAM_SERVICE: "lots"}, 400),
        ("negative wait header", b'{"prompt": "x"}', {protocol.PROGRAM_WAIT: "-1"}, 400),
        ("oversized", json.dumps({"prompt": "x" * 8000}).encode(), {}, 413),
        ("engine: unknown model", b'{"prompt": "x", "model": "gpt-9"}', {}, 404),
        ("engine: bad max_tokens", b'{"prompt": "x", "max_tokens": -1}', {}, 400),
    ]
    with httpx.Client(base_url=sidecar.url, timeout=10) as http:
        for name, raw, headers, status in cases:
            reply = http.post(
                "/v1/completions", content=raw, headers={"Content-Type": "application/json", **headers}
            )
            assert reply.status_code == status, name
            error = reply.json()["error"]
            assert error["message"] and set(error) >= {"message", "type", "param", "code"}, name
        direct = httpx.post(
            engine.url + "/v1/completions", json={"prompt": "x", "model": "gpt-9"}, timeout=10
        )
        relayed = http.post("/v1/completions", json={"prompt": "x", "model": "gpt-9"})
        assert relayed.json() == direct.json()  # engine errors pass through unchanged
        assert protocol.decode_report(relayed.headers["x-autellix-report"]).ok is False
        ok = http.post("/v1/completions", json={"prompt": "still alive?", "max_tokens": 3})
        assert ok.status_code == 200
        text = http.get("/metrics").text
        assert metric_value(text, "autellix_sidecar_running") == 0
        assert metric_value(text, "autellix_sidecar_queue_waiting", ['level="0"']) == 0


def test_engine_down_means_503_and_not_ready(sidecar_factory: SidecarFactory) -> None:
    sidecar = sidecar_factory(f"http://127.0.0.1:{free_port()}", "--engine-kind", "vllm")
    with httpx.Client(base_url=sidecar.url, timeout=10) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 503
        reply = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 503
        assert "cannot connect to the engine" in reply.json()["error"]["message"]
        assert http.get("/v1/models").status_code == 503
        assert metric_value(http.get("/metrics").text, "autellix_sidecar_running") == 0


# ----- what the sidecar sends an engine -------------------------------------------------------------------


class RecordingEngine(LoopbackApp):
    """A tiny engine that answers at once and records every generation request it receives.

    A fake at the outermost edge, on purpose: the point is the exact body and headers the sidecar sends
    to an engine (is ``priority`` there, with which value; are our ``X-Autellix-*`` headers gone), which
    no real engine reports back. It speaks just enough of vLLM's and SGLang's APIs (load, server info).
    """

    def __init__(self, server_info: dict[str, Any] | None) -> None:
        super().__init__()
        self.server_info = server_info
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/loads", self._loads)
        app.router.add_get("/server_info", self._info)
        app.router.add_get("/get_server_info", self._info)
        app.router.add_post("/v1/completions", self._complete)

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def _loads(self, _request: web.Request) -> web.Response:
        return web.json_response({"loads": [{"num_running_reqs": 0, "num_waiting_reqs": 0}]})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n")

    async def _info(self, _request: web.Request) -> web.Response:
        if self.server_info is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response(self.server_info)

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        return web.json_response({"object": "text_completion", "choices": [{"text": "k"}], "usage": usage})


VLLM_PRIORITY = {"vllm_config": {"scheduler_config": {"policy": "priority"}}}
VLLM_FCFS = {"vllm_config": {"scheduler_config": {"policy": "fcfs"}}}
SGLANG_LOW_FIRST = {"enable_priority_scheduling": True, "schedule_low_priority_values_first": True}


@pytest.mark.parametrize(
    ("kind", "mode", "server_info", "expected"),
    [
        ("vllm", "on", None, 4),  # level 4, [4 s, 8 s), holds a program service of 5 s: lower values first
        ("vllm", "off", VLLM_PRIORITY, None),
        ("vllm", "auto", None, None),  # the engine does not say: treated as FCFS
        ("vllm", "auto", VLLM_FCFS, None),
        ("vllm", "auto", VLLM_PRIORITY, 4),
        ("sglang", "on", None, 3),  # SGLang's default serves higher values first: 7 - 4
        ("sglang", "auto", SGLANG_LOW_FIRST, 4),
    ],
)
def test_priority_is_sent_only_to_a_priority_engine(
    sidecar_factory: SidecarFactory,
    kind: str,
    mode: str,
    server_info: dict[str, Any] | None,
    expected: int | None,
) -> None:
    with RecordingEngine(server_info) as engine:
        sidecar = sidecar_factory(
            engine.url, "--engine-kind", kind, "--engine-priority", mode, "--probe-interval", "0.02"
        )
        if expected is not None:
            assert wait_for(
                lambda: metric_value(metrics_of(sidecar.url), "autellix_sidecar_engine_priority_enabled") == 1
            )
        else:
            time.sleep(0.1)  # the first probes (and any detection) have run
        headers = {protocol.PROGRAM_ID: "p", protocol.PROGRAM_SERVICE: "5.0", "X-Request-Id": "r1"}
        reply = httpx.post(sidecar.url + "/v1/completions", json={"prompt": "x"}, headers=headers, timeout=10)
        assert reply.status_code == 200
        ((seen_headers, body),) = engine.requests
    assert body.get("priority") == expected
    assert "priority" in body if expected is not None else "priority" not in body
    assert not [k for k in seen_headers if k.lower().startswith("x-autellix")]
    assert {k.lower(): v for k, v in seen_headers.items()}.get("x-request-id") == "r1"


@pytest.mark.parametrize(("policy", "enabled"), [("priority", 1.0), ("fcfs", 0.0)])
def test_auto_priority_detects_the_simulated_engines_policy(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory, policy: str, enabled: float
) -> None:
    engine = sim_engine_factory("--time-scale", "0.01", "--scheduling-policy", policy)
    sidecar = sidecar_factory(
        engine.url, "--engine-kind", "sim", "--engine-priority", "auto", "--probe-interval", "0.02"
    )
    gauge = "autellix_sidecar_engine_priority_enabled"
    assert wait_for(lambda: metric_value(metrics_of(sidecar.url), gauge) == enabled)
    headers = {protocol.PROGRAM_ID: "p", protocol.PROGRAM_SERVICE: "5.0"}
    reply = httpx.post(
        sidecar.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=headers, timeout=10
    )
    assert reply.status_code == 200
