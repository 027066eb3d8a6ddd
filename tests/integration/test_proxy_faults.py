"""Faults with real processes: Redis dies and returns, an engine dies (and returns), a client walks away
(mid-stream, or right after ``[DONE]``); and a sidecar."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RedisServer, metric_value

pytestmark = [pytest.mark.integration]

ENGINE_FLAGS = ("--profile", "unit", "--time-scale", "0.01")


def chat(max_tokens: int = 3, **extra: object) -> dict[str, object]:
    return {
        "model": "sim-llama",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **extra,
    }


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample called ``name``, whatever its labels."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if not line.startswith("#") and line.split("{", 1)[0].split(" ", 1)[0] == name
    )


def assert_left_and_returned(log_path: Path, engine: str) -> None:
    """The proxy's log: ``engine`` stayed in the pool through two failures, left at the third
    (checks and calls that could not connect count alike), and returned after two passing checks."""
    log = log_path.read_text()
    marks = [
        rf"backend {engine}: .* failed \(1 of 3 before it leaves the pool\)",
        rf"backend {engine}: .* failed \(2 of 3 before it leaves the pool\)",
        rf"backend {engine} leaves the pool after 3 consecutive failures",
        rf"backend {engine}: health check passed \(1 of 2 before it returns\)",
        rf"backend {engine} is healthy",
    ]
    position = 0
    for mark in marks:
        found = re.compile(mark).search(log, position)
        assert found, f"{mark!r} not in the proxy's log after position {position}:\n{log[position:][-3000:]}"
        position = found.end()


@pytest.mark.redis
def test_redis_outage_degrades_to_local_state_and_recovers(
    sim_engine_factory, proxy_factory, redis_factory
) -> None:
    server: RedisServer = redis_factory()
    engine = sim_engine_factory(*ENGINE_FLAGS)
    proxy = proxy_factory(
        "--backend", f"e0={engine.url}", "--redis-url", server.url, "--redis-timeout", "0.3"
    )
    url = proxy.url + "/v1/chat/completions"
    with httpx.Client(timeout=30) as http:
        assert http.post(url, json=chat(), headers={"X-Program-Id": "before"}).status_code == 200
        assert b"before" in server.command("KEYS", "*prog*")
        server.kill()
        for _ in range(5):  # the proxy keeps serving from its local table
            reply = http.post(url, json=chat(), headers={"X-Program-Id": "during"})
            assert reply.status_code == 200, reply.text
        state = http.get(proxy.url + "/v1/programs/during").json()
        assert state["calls_completed"] == 5
        ready = http.get(proxy.url + "/ready")
        assert ready.status_code == 503 and ready.json()["table"] == "degraded"
        assert metric_value(http.get(proxy.url + "/metrics").text, "autellix_proxy_table_degraded") == 1.0
        assert metric_value(http.get(proxy.url + "/metrics").text, "autellix_proxy_redis_errors_total") >= 1.0
        server.start()  # Redis returns (empty: it kept nothing)
        wait_for(lambda: http.get(proxy.url + "/ready").status_code == 200)
        assert http.post(url, json=chat(), headers={"X-Program-Id": "after"}).status_code == 200
        assert b"after" in server.command("KEYS", "*prog*")
        assert metric_value(http.get(proxy.url + "/metrics").text, "autellix_proxy_table_degraded") == 0.0


def test_killing_an_engine_loses_no_call_that_had_not_started(sim_engine_factory, proxy_factory) -> None:
    doomed = sim_engine_factory(*ENGINE_FLAGS, name="doomed")
    survivor = sim_engine_factory(*ENGINE_FLAGS, name="survivor")
    proxy = proxy_factory(
        "--backend",
        f"a={doomed.url}",
        "--backend",
        f"b={survivor.url}",
        "--router",
        "round_robin",
        "--health-check-interval",
        "0.2",
    )
    url = proxy.url + "/v1/chat/completions"
    results: list[tuple[float, int]] = []
    killed_at: list[float] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:

            async def caller(index: int) -> None:
                for _ in range(12):
                    began = time.monotonic()
                    reply = await http.post(
                        url, json=chat(max_tokens=5), headers={"X-Program-Id": f"p{index}"}
                    )
                    results.append((began, reply.status_code))

            async def killer() -> None:
                await asyncio.sleep(0.4)
                killed_at.append(time.monotonic())
                await asyncio.to_thread(doomed.kill)

            await asyncio.gather(*(caller(i) for i in range(4)), killer())

    asyncio.run(scenario())
    kill = killed_at[0]
    after = [status for began, status in results if began > kill + 0.05]
    assert after and all(status == 200 for status in after)  # every call started after the kill was served
    failed = [began for began, status in results if status != 200]
    assert len(failed) <= 4  # at most the calls in flight on the dead engine at the kill (one per caller)
    assert all(began <= kill + 0.05 for began in failed)
    text = httpx.get(proxy.url + "/metrics").text
    assert metric_value(text, "autellix_proxy_backend_healthy", ['engine="a"']) == 0.0
    doomed.start()  # the same port: the engine is back
    wait_for(lambda: metric_value(httpx.get(proxy.url + "/metrics").text, "autellix_proxy_backend_healthy",
                                  ['engine="a"']) == 1.0)  # fmt: skip
    assert_left_and_returned(proxy.log_path, "a")
    with httpx.Client(timeout=30) as http:
        for i in range(4):
            assert http.post(url, json=chat(), headers={"X-Program-Id": f"back{i}"}).status_code == 200
    served = metric_sum(httpx.get(doomed.url + "/metrics").text, "vllm:request_success_total")
    assert served >= 1  # round robin sends calls to it again


def test_a_client_that_disconnects_aborts_the_call_in_the_engine(sim_engine_factory, proxy_factory) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    proxy = proxy_factory("--backend", f"e0={engine.url}")

    def running() -> float:
        return metric_value(httpx.get(engine.url + "/metrics").text, "vllm:num_requests_running")

    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=chat(max_tokens=2000, stream=True),
            headers={"X-Program-Id": "walker"},
        ) as reply:
            assert reply.status_code == 200
            chunks = reply.iter_bytes()  # keep the iterator: dropping it would close the stream
            assert next(chunks).startswith(b"data: ")
            wait_for(lambda: running() == 1.0)
        wait_for(lambda: running() == 0.0)  # closing our connection aborted it in the engine
        wait_for(lambda: http.get(proxy.url + "/v1/programs/walker").json()["in_flight"] == [])
        state = http.get(proxy.url + "/v1/programs/walker").json()
        assert (state["calls_completed"], state["calls_failed"]) == (1, 1)


def test_through_a_sidecar_the_report_is_applied_and_never_seen(
    sim_engine_factory, proxy_factory, tmp_path
) -> None:
    from autellix.launch import ServiceProcess, autellix_command, free_port

    engine = sim_engine_factory(*ENGINE_FLAGS)
    port = free_port()
    sidecar = ServiceProcess(
        name="sidecar",
        args=autellix_command(
            "sidecar", ["--port", str(port), "--engine-url", engine.url, "--engine-kind", "sim"]
        ),
        url=f"http://127.0.0.1:{port}",
        log_path=tmp_path / "sidecar.log",
    )
    try:
        sidecar.start()
        proxy = proxy_factory("--backend", f"s0={sidecar.url}")
        with httpx.Client(timeout=30) as http:
            streamed = http.post(
                proxy.url + "/v1/chat/completions", json=chat(stream=True), headers={"X-Program-Id": "sc"}
            )
            assert b"autellix-report" not in streamed.content and streamed.content.endswith(
                b"data: [DONE]\n\n"
            )
            plain = http.post(proxy.url + "/v1/chat/completions", json=chat(), headers={"X-Program-Id": "sc"})
            assert not [h for h in plain.headers if h.lower().startswith("x-autellix")]
            state = http.get(proxy.url + "/v1/programs/sc").json()
        assert state["calls_completed"] == 2
        assert state["output_tokens"] == 6 and state["prompt_tokens"] > 0  # only a report carries tokens
        text = httpx.get(proxy.url + "/metrics").text
        assert metric_value(text, "autellix_proxy_completion_reports_total", ['source="sidecar"']) == 2.0
    finally:
        sidecar.stop()


@pytest.mark.redis
def test_a_finish_during_an_outage_is_replayed_when_redis_returns(
    sim_engine_factory, proxy_factory, redis_factory
) -> None:
    server: RedisServer = redis_factory()
    engine = sim_engine_factory(*ENGINE_FLAGS)
    proxy = proxy_factory(
        "--backend", f"e0={engine.url}", "--redis-url", server.url, "--redis-timeout", "0.3"
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            call = asyncio.create_task(
                http.post(
                    proxy.url + "/v1/chat/completions",
                    json=chat(max_tokens=80),
                    headers={"X-Program-Id": "long"},
                )
            )
            await asyncio.sleep(0.3)  # the call has started on Redis ...
            assert b"+OK" in server.command("CLIENT", "PAUSE", "1500", "ALL")  # ... which stops answering
            assert (await call).status_code == 200  # it ends during the outage: its finish is queued
            # The finish was sent before the reply ended and is acknowledged in the background
            # (calls.py rule 5): the outage shows once it times out, not before the client's reply.
            deadline = time.monotonic() + 10
            while (await http.get(proxy.url + "/ready")).status_code != 503:
                assert time.monotonic() < deadline, "the outage was never seen"
                await asyncio.sleep(0.02)

    asyncio.run(scenario())
    with httpx.Client(timeout=30) as http:
        wait_for(lambda: http.get(proxy.url + "/ready").status_code == 200)
        state = http.get(proxy.url + "/v1/programs/long").json()
        text = http.get(proxy.url + "/metrics").text
    errors = [line for line in text.splitlines() if line.startswith("autellix_proxy_redis_errors_total{")]
    assert errors  # the outage was seen (by the finish, or by the lease renewal just before it)
    assert (state["calls_completed"], state["in_flight"]) == (1, [])  # ... and was replayed
    assert state["service_plas"] > 0.5


def test_a_sidecar_whose_engine_died_leaves_the_pool(
    sim_engine_factory, sidecar_factory, proxy_factory
) -> None:
    """The sidecar itself stays up, but its /ready fails: the proxy must stop routing to it."""
    engines = [sim_engine_factory("--time-scale", "0.01", name=f"engine-{i}") for i in range(2)]
    sidecars = [
        sidecar_factory(e.url, "--engine-kind", "sim", name=f"sidecar-{i}") for i, e in enumerate(engines)
    ]
    proxy = proxy_factory(
        "--backend", f"a={sidecars[0].url}", "--backend", f"b={sidecars[1].url}",
        "--router", "round_robin", "--health-check-interval", "0.1",
    )  # fmt: skip

    def health_of_a() -> float:
        text = httpx.get(proxy.url + "/metrics", timeout=5).text
        return metric_value(text, "autellix_proxy_backend_healthy", ['engine="a"'])

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and health_of_a() != 1:
        time.sleep(0.05)
    engines[0].kill()
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and health_of_a() != 0:
            time.sleep(0.05)
        assert health_of_a() == 0  # although the sidecar itself still lives:
        assert httpx.get(sidecars[0].url + "/health", timeout=2).status_code == 200
        for i in range(6):
            body = {"prompt": f"call {i}", "max_tokens": 2}
            reply = http.post("/v1/completions", json=body, headers={"X-Program-Id": f"p{i}"})
            assert reply.status_code == 200, reply.text
        assert engines[1].alive
        engines[0].start()  # the engine returns on its port; the sidecar's /ready passes again
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and health_of_a() != 1:
            time.sleep(0.05)
        assert health_of_a() == 1
        assert_left_and_returned(proxy.log_path, "a")
        for i in range(4):
            body = {"prompt": f"again {i}", "max_tokens": 2}
            reply = http.post("/v1/completions", json=body, headers={"X-Program-Id": f"q{i}"})
            assert reply.status_code == 200, reply.text
    assert metric_sum(httpx.get(engines[0].url + "/metrics").text, "vllm:request_success_total") >= 1


def read_until_done_and_close(port: int, program: str, reset: bool) -> bytes:
    """A raw client: one streamed call, read until ``data: [DONE]``, then close at once (RST if ``reset``)."""
    body = json.dumps(chat(stream=True)).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        f"X-Program-Id: {program}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        while b"data: [DONE]" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return received


@pytest.mark.parametrize("through", ["engine", "sidecar"])
def test_a_client_that_closes_right_after_done_is_no_error(
    through: str, sim_engine_factory, sidecar_factory, proxy_factory
) -> None:
    """Closing right after ``[DONE]`` used to log "Cannot write to closing transport" (and answer 500)
    through a sidecar, and to record the call as failed now and then against a bare engine."""
    engine = sim_engine_factory(*ENGINE_FLAGS)
    backend = engine if through == "engine" else sidecar_factory(engine.url, "--engine-kind", "sim")
    proxy = proxy_factory("--backend", f"e0={backend.url}")
    port = int(proxy.url.rsplit(":", 1)[1])
    for i in range(30):
        received = read_until_done_and_close(port, f"close-{i}", reset=i % 2 == 1)
        assert b"data: [DONE]" in received, received[-300:]
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        states = [http.get(f"/v1/programs/close-{i}").json() for i in range(30)]
        done = [(s["calls_completed"], s["calls_failed"], s["in_flight"]) for s in states]
        assert done == [(1, 0, [])] * 30  # every call finished, none failed, nothing left in flight
        if through == "sidecar":  # the sidecar's report was applied (only a report carries tokens)
            assert all(s["output_tokens"] == 3 for s in states)
        reply = http.post("/v1/chat/completions", json=chat(stream=True), headers={"X-Program-Id": "after"})
        assert reply.status_code == 200 and reply.content.endswith(b"data: [DONE]\n\n")  # still serving
        text = http.get("/metrics").text
    statuses = re.findall(r'requests_total\{route="/v1/chat/completions",status="(\d+)"\} (\S+)', text)
    assert statuses == [("200", "31.0")]
    log = proxy.log_path.read_text()
    assert "closing transport" not in log and " ERROR " not in log and "Traceback" not in log, log[-3000:]
