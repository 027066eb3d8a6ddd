"""Two proxy replicas sharing a real redis-server, in front of two simulated engines (real processes).

Clients are the ``openai`` SDK (through the client helper) and raw HTTP (httpx).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port, start_sim_engine
from autellix.proxy.client import async_program, program
from tests.integration.conftest import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ENGINE_FLAGS = ["--profile", "unit", "--time-scale", "0.01", "--seed", "7"]
SHORT_CALL_MAX_TOKENS = 50  # so that a 400-character prompt is a "long" call that pins its program


@dataclass
class Fleet:
    engines: list[ServiceProcess]
    proxies: list[ServiceProcess]
    prefix: str
    redis_url: str


def start_proxy(log_dir: Path, config: Path, extra: list[str], name: str) -> ServiceProcess:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--config", str(config), *extra]
    return ServiceProcess(
        name=name,
        args=autellix_command("proxy", args),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"{name}.log",
    ).start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Fleet]:
    log_dir = tmp_path_factory.mktemp("fleet")
    started: list[ServiceProcess] = []
    try:
        engines = [start_sim_engine(log_dir, ENGINE_FLAGS, name=f"engine{i}") for i in range(2)]
        started += engines
        prefix = "it" + secrets.token_hex(3)
        config = log_dir / "proxy.yaml"
        config.write_text(
            "backend:\n"
            + "".join(f"  - e{i}={engine.url}\n" for i, engine in enumerate(engines))
            + f"redis_url: {redis_server.url}\nredis_key_prefix: {prefix}\nmax_body_bytes: 65536\n"
            + f"router_params: {{short_call_max_tokens: {SHORT_CALL_MAX_TOKENS}}}\nlog_level: warning\n"
        )
        proxies = [start_proxy(log_dir, config, [], f"proxy{i}") for i in range(2)]
        started += proxies
        yield Fleet(engines, proxies, prefix, redis_server.url)
    finally:
        for service in started:
            service.stop()


def chat(content: str = "hello", max_tokens: int = 3, **extra: object) -> dict[str, object]:
    return {
        "model": "sim-llama",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **extra,
    }


def test_one_program_through_both_replicas_has_one_state_and_one_pin(fleet: Fleet) -> None:
    long_prompt = "history " * 60  # ~120 estimated tokens > 50: a long call, pinned on first use
    with httpx.Client(timeout=30) as http:
        for i in range(6):
            proxy = fleet.proxies[i % 2]
            reply = http.post(
                proxy.url + "/v1/chat/completions", json=chat(long_prompt), headers={"X-Program-Id": "shared"}
            )
            assert reply.status_code == 200, reply.text
        states = [http.get(p.url + "/v1/programs/shared").json() for p in fleet.proxies]
    assert states[0] == states[1]
    state = states[0]
    assert state["calls_completed"] == 6 and state["in_flight"] == []
    assert state["pinned_engine"] in ("e0", "e1")
    assert state["service_plas"] > 0
    # every long call went to the pinned engine, whichever replica routed it
    pinned = state["pinned_engine"]
    for proxy in fleet.proxies:
        text = httpx.get(proxy.url + "/metrics").text
        other = "e1" if pinned == "e0" else "e0"
        assert 'engine="' + other + '",reason="long call"' not in text
        assert 'engine="' + other + '",reason="first long call"' not in text


def test_least_used_sees_the_load_of_every_replica(fleet: Fleet) -> None:
    loads: dict[str, int] = {}

    async def scenario() -> None:
        nonlocal loads
        async with httpx.AsyncClient(timeout=30) as http:
            holder = fleet.proxies[0].url + "/v1/chat/completions"
            # three slow calls through replica 0: e0, e1, e0 (replica 0 sees its own starts)
            slow = [
                asyncio.create_task(
                    http.post(holder, json=chat(max_tokens=300), headers={"X-Program-Id": f"slow{i}"})
                )
                for i in range(3)
            ]
            await asyncio.sleep(1.2)  # replica 1 refreshes its view of the fleet's loads every second
            other = fleet.proxies[1].url
            loads = fleet_loads(fleet)
            before = httpx.get(other + "/metrics").text
            reply = await http.post(
                other + "/v1/chat/completions", json=chat(), headers={"X-Program-Id": "probe"}
            )
            assert reply.status_code == 200
            after = httpx.get(other + "/metrics").text
            for task in slow:
                assert (await task).status_code == 200

        def decided(text: str, engine: str) -> float:
            return sum_of(text, "autellix_proxy_routing_decisions_total", f'engine="{engine}"')

        # the slow calls were all started by the other replica; the probe went to the least-used engine
        least = min(("e0", "e1"), key=lambda engine: loads.get(engine, 0))
        assert sorted(loads.values()) == [1, 2]
        assert decided(after, least) - decided(before, least) == 1.0
        assert sum(decided(after, e) - decided(before, e) for e in ("e0", "e1")) == 1.0

    asyncio.run(scenario())


def sum_of(text: str, name: str, label: str) -> float:
    """The sum of every sample of ``name`` whose labels contain ``label``."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] == name and label in head:
            total += float(value)
    return total


def fleet_loads(fleet: Fleet) -> dict[str, int]:
    """The fleet's outstanding calls per engine, read from Redis itself."""
    import redis

    client = redis.Redis.from_url(fleet.redis_url)
    try:
        raw = client.hgetall("{" + fleet.prefix + "}:loads")
    finally:
        client.close()
    return {
        key.decode() if isinstance(key, bytes) else key: int(value)
        for key, value in raw.items()
        if int(value) > 0
    }


def normalise(stream: bytes) -> bytes:
    stream = re.sub(rb'"id":"[^"]+"', b'"id":"X"', stream)
    return re.sub(rb'"created":\d+', b'"created":0', stream)


def test_streaming_is_byte_identical_to_the_engine(fleet: Fleet) -> None:
    body = chat("same prompt", max_tokens=5, stream=True, stream_options={"include_usage": True})
    with httpx.Client(timeout=30) as http:
        direct = http.post(fleet.engines[0].url + "/v1/chat/completions", json=body).content
        through = http.post(
            fleet.proxies[0].url + "/v1/chat/completions", json=body, headers={"X-Program-Id": "bytes"}
        ).content
    assert b"autellix-report" not in through
    assert normalise(through) == normalise(direct)
    assert through.endswith(b"data: [DONE]\n\n")


def test_the_openai_sdk_with_the_client_helper(fleet: Fleet) -> None:
    url = fleet.proxies[1].url
    with program(url) as prog:
        client = prog.openai()
        reply = client.chat.completions.create(
            model="sim-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content
        with prog.thread("t1"):
            chunks = list(
                client.chat.completions.create(
                    model="sim-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
                )
            )
        assert chunks
        state = httpx.get(f"{url}/v1/programs/{prog.id}").json()
        assert state["calls_completed"] == 2
        program_id = prog.id
    assert httpx.get(f"{url}/v1/programs/{program_id}").status_code == 404  # ended on exit
    with pytest.raises(RuntimeError), program(url) as failing:
        failed_id = failing.id
        raise RuntimeError("the block fails")
    assert httpx.get(f"{url}/v1/programs/{failed_id}").status_code == 404  # ended on error too


def test_parallel_threads_with_the_async_helper(fleet: Fleet) -> None:
    async def scenario() -> tuple[str, dict[str, Any]]:
        async with async_program(fleet.proxies[0].url) as prog:
            client = prog.async_openai()

            async def branch(name: str) -> None:
                with prog.thread(name):
                    await client.chat.completions.create(
                        model="sim-llama",
                        messages=[{"role": "user", "content": name}],
                        max_tokens=20,
                        extra_body={"ignore_eos": True},
                    )

            calls = [asyncio.create_task(branch(f"t{i}")) for i in range(3)]
            await asyncio.sleep(0.08)
            async with httpx.AsyncClient() as http:
                during = (await http.get(f"{prog.proxy_url}/v1/programs/{prog.id}")).json()
            await asyncio.gather(*calls)
            return prog.id, during

    _program_id, during = asyncio.run(scenario())
    assert sorted(during["threads"]) == ["t0", "t1", "t2"]


def test_bad_input_gets_openai_errors_from_a_real_proxy(fleet: Fleet) -> None:
    url = fleet.proxies[0].url + "/v1/chat/completions"
    cases: list[tuple[bytes, dict[str, Any], int]] = [
        (b"{not json", {}, 400),
        (json.dumps({"model": "sim-llama", "messages": {"role": "user"}}).encode(), {}, 400),
        (json.dumps({"model": "sim-llama"}).encode(), {}, 400),
        (json.dumps(chat(stream="true")).encode(), {}, 400),
        (json.dumps(chat(model="no-such-model")).encode(), {}, 404),
        (json.dumps(chat("x" * 70_000)).encode(), {}, 413),
        (json.dumps(chat()).encode(), {"X-Program-Id": "x" * 257}, 400),
        (json.dumps(chat()).encode(), {"X-Session-Id": b"a\xffb"}, 400),  # not UTF-8
    ]
    with httpx.Client(timeout=30) as http:
        for raw, headers, status in cases:
            reply = http.post(url, content=raw, headers={"Content-Type": "application/json", **headers})
            assert reply.status_code == status, (raw[:50], reply.text)
            assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
        # the engine's own 400 (a prompt longer than its context) passes through
        reply = http.post(url, json=chat(max_tokens=10**6))
        assert reply.status_code == 400
        # and the proxy still serves
        assert http.post(url, json=chat()).status_code == 200
    sdk = openai.OpenAI(base_url=fleet.proxies[0].url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])


def test_models_ready_and_metrics(fleet: Fleet) -> None:
    url = fleet.proxies[0].url
    assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["sim-llama"]
    ready = httpx.get(url + "/ready").json()
    assert ready == {"ready": True, "backends": {"e0": True, "e1": True}, "table": "redis"}
    time.sleep(0.01)
    text = httpx.get(url + "/metrics").text
    for name in (
        "autellix_proxy_requests_total",
        "autellix_proxy_added_latency_seconds_bucket",
        "autellix_proxy_redis_latency_seconds_bucket",
        "autellix_proxy_backend_healthy",
        "autellix_proxy_time_to_first_token_seconds_bucket",
    ):
        assert name in text
