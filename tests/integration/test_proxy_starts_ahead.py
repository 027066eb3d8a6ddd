"""Calls that go ahead of their start's Redis reply (programs/mirror.py, store.py rule 2), with real
proxy processes and a real redis-server in front of a recording sidecar stand-in whose every call
reports 2 s of execution, so that the priority context each call carried is known exactly."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from autellix.engine_adapters import protocol
from autellix.launch import ServiceProcess
from tests.integration.conftest import RedisServer, metric_value
from tests.integration.recording import RecordingEngine
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]

EXEC = 2.0
BODY = {"model": "rec", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
PATH = "/v1/chat/completions"


@pytest.fixture
def sidecar() -> Iterator[RecordingEngine]:
    with RecordingEngine(report_exec_time=EXEC) as engine:
        yield engine


def replicas(
    proxy_factory: Callable[..., ServiceProcess], redis_url: str, backend: str, count: int, *extra: str
) -> list[ServiceProcess]:
    prefix = "ahead" + secrets.token_hex(3)
    flags = ("--backend", f"e0={backend}", "--redis-url", redis_url, "--redis-key-prefix", prefix, *extra)
    return [proxy_factory(*flags, name=f"proxy{n}") for n in range(count)]


def call(proxy: ServiceProcess, program: str | None) -> None:
    headers = {"X-Program-Id": program} if program is not None else {}
    reply = httpx.post(proxy.url + PATH, json=BODY, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text


def services_sent(engine: RecordingEngine) -> list[float]:
    return [float(v or "nan") for v in engine.headers_of(PATH, protocol.PROGRAM_SERVICE)]


def starts_ahead(proxy: ServiceProcess, outcome: str) -> float:
    page = httpx.get(proxy.url + "/metrics", timeout=10).text
    return metric_value(page, "autellix_proxy_starts_ahead_total", [f'outcome="{outcome}"'])


def program_state(proxy: ServiceProcess, program: str) -> dict[str, object]:
    reply = httpx.get(f"{proxy.url}/v1/programs/{program}", timeout=10)
    assert reply.status_code == 200
    state: dict[str, object] = reply.json()
    return state


def test_one_replica_sends_every_call_ahead_with_the_exact_context(
    proxy_factory: Callable[..., ServiceProcess], redis_url: str, sidecar: RecordingEngine
) -> None:
    (proxy,) = replicas(proxy_factory, redis_url, sidecar.url, 1)
    created = httpx.post(proxy.url + "/v1/programs", json={}, timeout=10).json()
    for _ in range(5):
        call(proxy, created["id"])
    for _ in range(3):
        call(proxy, "named-without-create")  # the first call learns the program from Redis's reply
    call(proxy, None)  # no id: a program of one call
    # what the program table would have said at each arrival, to the last bit
    assert services_sent(sidecar) == [0.0, 2.0, 4.0, 6.0, 8.0, 0.0, 2.0, 4.0, 0.0]
    assert starts_ahead(proxy, "confirmed") == 5 + 2 + 1
    assert starts_ahead(proxy, "differed") == 0
    state = program_state(proxy, created["id"])
    assert (state["service_plas"], state["calls_completed"], state["in_flight"]) == (10.0, 5, [])


def test_a_program_served_by_two_replicas_is_caught_and_then_read_from_redis(
    proxy_factory: Callable[..., ServiceProcess], redis_url: str, sidecar: RecordingEngine
) -> None:
    first, second = replicas(proxy_factory, redis_url, sidecar.url, 2)
    for proxy in (first, first, second, first):
        call(proxy, "wanderer")
    # Redis answers a start long before the call's reply in practice; waiting for the count makes sure
    assert wait_until(lambda: starts_ahead(first, "differed") == 1, 10)
    call(first, "wanderer")
    sent = services_sent(sidecar)
    # calls 1-2 on the first replica; call 3 on the second, which asks Redis (exact: 4); call 4 back on
    # the first, whose mirror missed call 3: it goes ahead with 4 instead of 6 (the one stale context,
    # mirror rule 4); Redis's reply differs, so call 5 waits for Redis and carries the exact 8.
    assert sent == [0.0, 2.0, 4.0, 4.0, 8.0]
    assert (starts_ahead(first, "confirmed"), starts_ahead(first, "differed")) == (1, 1)
    assert starts_ahead(second, "confirmed") + starts_ahead(second, "differed") == 0
    state = program_state(second, "wanderer")
    assert (state["service_plas"], state["calls_completed"]) == (10.0, 5)


def test_with_starts_ahead_off_every_call_waits_for_redis(
    proxy_factory: Callable[..., ServiceProcess], redis_url: str, sidecar: RecordingEngine
) -> None:
    (proxy,) = replicas(proxy_factory, redis_url, sidecar.url, 1, "--no-starts-ahead")
    for _ in range(3):
        call(proxy, "patient")
    assert services_sent(sidecar) == [0.0, 2.0, 4.0]
    assert starts_ahead(proxy, "confirmed") + starts_ahead(proxy, "differed") == 0


def test_a_stalled_redis_does_not_hold_up_a_call_that_goes_ahead(
    proxy_factory: Callable[..., ServiceProcess],
    redis_factory: Callable[..., RedisServer],
    sidecar: RecordingEngine,
) -> None:
    server = redis_factory()
    (proxy,) = replicas(proxy_factory, server.url, sidecar.url, 1, "--redis-timeout", "0.3")
    for _ in range(2):
        call(proxy, "steady")  # learnt from the first reply, ahead from the second call on
    assert b"+OK" in server.command("CLIENT", "PAUSE", "3000", "ALL")
    began = time.monotonic()
    call(proxy, "steady")  # forwarded at once; its start waits in the paused Redis
    assert time.monotonic() - began < 2.5  # answered while Redis still answered nobody
    assert services_sent(sidecar)[-1] == 2 * EXEC
    # the start's reply never comes: the link times out, the replica degrades, then recovers
    assert wait_until(lambda: starts_ahead(proxy, "failed") == 1, 10)
    assert wait_until(lambda: httpx.get(proxy.url + "/ready", timeout=10).status_code == 200, 15)
    state = program_state(proxy, "steady")
    assert state["in_flight"] == []  # the queued finish was replayed (or found its start dropped)
    assert state["calls_completed"] in (2, 3)
    # after an outage the replica trusts nothing it mirrored: the next call reads Redis (exact)
    call(proxy, "steady")
    assert services_sent(sidecar)[-1] == state["service_plas"]
    assert starts_ahead(proxy, "differed") == 0
