"""Bounded queues and per-call deadlines on real processes (autellix/deadlines.py, proxy/limits.py).

A simulated engine on the ``unit`` profile at time scale 0.01 makes every token 10 ms, so a call for
300 tokens runs for about 3 s: long enough to hold a slot while the test sends the calls that must be
refused, short enough that everything stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import metric_value

pytestmark = [pytest.mark.integration]

ENGINE_FLAGS = ("--profile", "unit", "--time-scale", "0.01")
K1, K2 = "key-one-123", "key-two-456"


def chat(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "sim-llama",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


def messages(max_tokens: int) -> dict[str, Any]:
    return {
        "model": "sim-llama",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}],
    }


async def hold(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> int:
    """A long call that occupies a slot for about 3 s."""
    reply = await client.post(url + "/v1/chat/completions", json=chat(300), headers=headers)
    return reply.status_code


def waiting(text: str) -> float:
    """Calls in the sidecar's queue, summed over its levels."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("autellix_sidecar_queue_waiting{")
    )


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_full_sidecar_queue_answers_429_with_retry_after(sim_engine_factory, sidecar_factory) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    flags = ("--window-mode", "fixed", "--max-in-flight", "1", "--max-queued", "1", "--retry-after", "2")
    sidecar = sidecar_factory(engine.url, *flags)
    async with httpx.AsyncClient(timeout=30.0) as client:
        running = asyncio.create_task(hold(client, sidecar.url))

        async def in_flight() -> bool:
            text = (await client.get(sidecar.url + "/metrics")).text
            return metric_value(text, "autellix_sidecar_running") == 1

        await until(in_flight)
        queued = asyncio.create_task(hold(client, sidecar.url))

        async def one_waiting() -> bool:
            text = (await client.get(sidecar.url + "/metrics")).text
            return waiting(text) == 1

        await until(one_waiting)
        refused = await client.post(sidecar.url + "/v1/chat/completions", json=chat(3))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["type"] == "RateLimitError"
        anthropic = await client.post(sidecar.url + "/v1/messages", json=messages(3))
        assert anthropic.status_code == 429
        body = anthropic.json()
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert anthropic.headers["Retry-After"] == "2"
        assert await running == 200 and await queued == 200
        text = (await client.get(sidecar.url + "/metrics")).text
        assert metric_value(text, "autellix_sidecar_rejected_total", ['reason="queue_full"']) == 2


async def test_a_call_whose_deadline_passes_in_the_sidecar_queue_is_a_504(
    sim_engine_factory, sidecar_factory
) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    sidecar = sidecar_factory(engine.url, "--window-mode", "fixed", "--max-in-flight", "1")
    async with httpx.AsyncClient(timeout=30.0) as client:
        running = asyncio.create_task(hold(client, sidecar.url))

        async def in_flight() -> bool:
            text = (await client.get(sidecar.url + "/metrics")).text
            return metric_value(text, "autellix_sidecar_running") == 1

        await until(in_flight)
        began = time.monotonic()
        late = await client.post(
            sidecar.url + "/v1/chat/completions", json=chat(3), headers={"X-Request-Timeout": "0.5"}
        )
        waited = time.monotonic() - began
        assert late.status_code == 504, late.text
        assert "deadline" in late.json()["error"]["message"]
        assert 0.4 < waited < 2.5  # answered at its deadline, not when the slot freed (about 3 s)
        text = (await client.get(sidecar.url + "/metrics")).text
        assert waiting(text) == 0  # it left the queue
        assert metric_value(text, "autellix_sidecar_rejected_total", ['reason="deadline"']) == 1
        bad = await client.post(
            sidecar.url + "/v1/chat/completions", json=chat(3), headers={"X-Request-Timeout": "soon"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Request-Timeout"
        assert await running == 200


async def test_the_proxy_bounds_each_api_key_and_each_engine(sim_engine_factory, proxy_factory) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    proxy = proxy_factory(
        "--backend", f"e0={engine.url}", "--api-key", K1, "--api-key", K2, "--max-queued-per-key", "1"
    )
    first = {"Authorization": f"Bearer {K1}"}
    second = {"Authorization": f"Bearer {K2}"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        running = asyncio.create_task(hold(client, proxy.url, first))
        await asyncio.sleep(0.5)
        refused = await client.post(proxy.url + "/v1/chat/completions", json=chat(3), headers=first)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "--max-queued-per-key" in error["message"]
        anthropic = await client.post(proxy.url + "/v1/messages", json=messages(3), headers=first)
        assert anthropic.status_code == 429 and anthropic.json()["error"]["type"] == "rate_limit_error"
        other = await client.post(proxy.url + "/v1/chat/completions", json=chat(3), headers=second)
        assert other.status_code == 200  # another tenant is not held back
        assert await running == 200
        again = await client.post(proxy.url + "/v1/chat/completions", json=chat(3), headers=first)
        assert again.status_code == 200  # the slot came back
        text = (await client.get(proxy.url + "/metrics")).text
        assert metric_value(text, "autellix_proxy_rejected_total", ['reason="key_full"']) == 2


async def test_a_full_engine_sends_calls_to_another_and_all_full_is_a_429(
    sim_engine_factory, proxy_factory
) -> None:
    engines = [sim_engine_factory(*ENGINE_FLAGS, name=f"engine-{i}") for i in range(2)]
    backends = [part for i, e in enumerate(engines) for part in ("--backend", f"e{i}={e.url}")]
    proxy = proxy_factory(*backends, "--router", "round_robin", "--max-queued-per-engine", "1")
    async with httpx.AsyncClient(timeout=30.0) as client:
        held = [asyncio.create_task(hold(client, proxy.url)) for _ in range(2)]
        await asyncio.sleep(0.5)  # one on each engine: a round-robin second call would have met a full one
        refused = await client.post(proxy.url + "/v1/chat/completions", json=chat(3))
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert "--max-queued-per-engine" in refused.json()["error"]["message"]
        assert await asyncio.gather(*held) == [200, 200]
        text = (await client.get(proxy.url + "/metrics")).text
        assert metric_value(text, "autellix_proxy_rejected_total", ['reason="engines_full"']) == 1


async def test_a_deadline_cuts_a_stream_with_an_error_event_and_a_waiting_call_is_a_504(
    sim_engine_factory, sidecar_factory, proxy_factory
) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    sidecar = sidecar_factory(engine.url, "--window-mode", "fixed", "--max-in-flight", "1")
    proxy = proxy_factory("--backend", f"s0={sidecar.url}")
    async with httpx.AsyncClient(timeout=30.0) as client:
        began = time.monotonic()
        async with client.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=chat(300, stream=True),
            headers={"X-Request-Timeout": "1"},
        ) as reply:
            assert reply.status_code == 200
            body = (await reply.aread()).decode()
        took = time.monotonic() - began
        assert 0.8 < took < 2.5, took
        events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert "deadline" in error["message"]
        assert "X-Autellix" not in body and ": autellix-report" not in body
        # a call that waits behind a running one: the proxy's or the sidecar's 504, at its deadline
        running = asyncio.create_task(hold(client, proxy.url))
        await asyncio.sleep(0.3)
        late = await client.post(
            proxy.url + "/v1/chat/completions", json=chat(3), headers={"X-Request-Timeout": "0.5"}
        )
        assert late.status_code == 504 and "deadline" in late.json()["error"]["message"]
        assert await running == 200
        program_free = await client.get(proxy.url + "/metrics")
        assert program_free.status_code == 200
