"""The proxy app in-process against made-up backends (the outermost edge: canned engine replies).

The backends here are handlers of a :class:`~autellix.proxy.transport.MockTransport` that answer like a
sidecar (with a completion report) or like a bare engine (without one), or fail on purpose; they pin
down bytes and statuses exactly, with no server behind them. Real engines, sidecars, replicas, Redis
and the real transport are exercised in tests/integration/test_proxy_*.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from autellix.engine_adapters.protocol import REPORT_HEADER, CompletionReport
from autellix.proxy.app import PROXY, create_app
from autellix.proxy.backends import HealthState
from autellix.proxy.config import ProxySettings
from autellix.proxy.transport import MockReply, MockTransport, UpstreamRequest, UpstreamUnavailable

STREAM_EVENTS = [
    b'data: {"choices":[{"delta":{"content":"he"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"y"}}]}\n\n',
]
DONE = b"data: [DONE]\n\n"


@dataclass
class FakeBackend:
    """An engine or sidecar stand-in: ``mode`` is "sidecar", "engine", "503", "400", "401", "broken",
    "cut" (a sidecar whose engine died mid-stream: its report, then a clean end without ``[DONE]``),
    "linger" (an engine that keeps its stream open after ``[DONE]`` until ``release`` is set) or "dead"
    (refuses connections)."""

    name: str
    mode: str = "sidecar"
    model: str = "m"
    seen: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    resident: float | None = None  # the working-set share its reports carry
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.name}.backend.test"

    async def answer(self, request: UpstreamRequest) -> MockReply:
        if self.mode == "dead":
            raise UpstreamUnavailable("refused", "connect", unreachable=True, reason="ClientConnectorError")
        path = request.url.removeprefix(self.url)
        if path == "/v1/models":
            return MockReply.json({"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path != "/v1/chat/completions":
            return MockReply(200, b"ok") if path == "/health" else MockReply(404)
        return await self.chat(request)

    async def chat(self, request: UpstreamRequest) -> MockReply:
        self.seen.append(dict(request.headers))
        self.bodies.append(request.body or b"")
        body = json.loads(request.body or b"{}")
        call_id = request.headers.get("X-Autellix-Call-Id", "?")
        report = CompletionReport(
            call_id, queue_wait=0.5, exec_time=2.0, prompt_tokens=7, output_tokens=2, resident=self.resident
        )
        if self.mode == "503":
            return MockReply.json({"error": {"message": "overloaded"}}, status=503)
        if self.mode == "401":  # an engine started with --api-key that does not like the key it got
            return MockReply.json({"error": {"message": "Unauthorized"}}, status=401)
        if self.mode == "400":
            return MockReply.json({"error": {"message": "bad max_tokens"}}, status=400)
        if body.get("stream"):
            return MockReply.sse(self.stream(report), headers={"X-Engine": "fake"})
        headers = {REPORT_HEADER: report.to_json(), "X-Autellix-Other": "x"} if self.mode == "sidecar" else {}
        return MockReply.json({"choices": [{"message": {"content": "hey"}}]}, headers=headers)

    async def stream(self, report: CompletionReport) -> AsyncIterator[bytes]:
        for event in STREAM_EVENTS:
            yield event
            if self.mode == "broken":  # the engine dies mid-stream
                raise RuntimeError("engine crashed")
            if self.mode == "cut":
                yield replace(report, ok=False).sse_line()
                return
        if self.mode == "sidecar":
            line = report.sse_line()
            yield line[:7]  # the report split across writes
            yield line[7:] + DONE
        else:
            yield DONE
        if self.mode == "linger":
            await self.release.wait()


class Fleet:
    """The made-up backends of one test, behind one mock transport."""

    def __init__(self) -> None:
        self.backends: dict[str, FakeBackend] = {}
        self.transport = MockTransport(self.answer)

    async def answer(self, request: UpstreamRequest) -> MockReply:
        for backend in self.backends.values():
            if request.url.startswith(backend.url + "/"):
                return await backend.answer(request)
        raise UpstreamUnavailable("no such host", "connect", unreachable=True)

    def add(self, **kwargs: Any) -> FakeBackend:
        backend = FakeBackend(f"b{len(self.backends)}", **kwargs)
        self.backends[backend.name] = backend
        return backend


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def start_backend(fleet: Fleet) -> Callable[..., Any]:
    async def start(**kwargs: Any) -> FakeBackend:
        return fleet.add(**kwargs)

    return start


@pytest.fixture
async def start_proxy(fleet: Fleet) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(backends: dict[str, str], **overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = ProxySettings(
            backend=[f"{name}={url}" for name, url in backends.items()],
            retry_backoff=0.0,
            health_check_interval=60.0,
            **overrides,
        )
        # handler_cancellation as in production (autellix/serving.py): a client that leaves cancels
        app = create_app(settings, transport=fleet.transport)
        client = TestClient(TestServer(app, host="127.0.0.1", handler_cancellation=True))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def url_of(backend: FakeBackend) -> str:
    return backend.url


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


async def test_streaming_is_byte_identical_without_the_report_and_the_report_is_applied(
    start_backend, start_proxy
) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)})
    reply = await proxy.post(
        "/v1/chat/completions", json=chat_body(stream=True), headers={"X-Program-Id": "p"}
    )
    assert reply.status == 200
    assert await reply.read() == b"".join(STREAM_EVENTS) + DONE
    assert reply.headers["X-Engine"] == "fake"
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["service_plas"], state["wait"], state["prompt_tokens"]) == (2.0, 0.5, 7)
    sent = backend.seen[0]
    assert sent["X-Autellix-Program-Id"] == "p" and float(sent["X-Autellix-Program-Service"]) == 0.0


async def test_non_streaming_strips_internal_headers_and_applies_the_report(
    start_backend, start_proxy
) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)})
    for _ in range(2):
        reply = await proxy.post("/v1/chat/completions", json=chat_body(), headers={"X-Program-Id": "p"})
        assert reply.status == 200
        assert not [name for name in reply.headers if name.lower().startswith("x-autellix")]
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["service_plas"], state["calls_completed"]) == (4.0, 2)
    # the second call carried the service of the first in its priority context
    assert float(backend.seen[1]["X-Autellix-Program-Service"]) == 2.0


async def test_the_residency_router_sends_new_programs_where_the_sidecars_report_room(
    start_backend, start_proxy
) -> None:
    full, roomy = await start_backend(resident=0.9), await start_backend(resident=0.1)
    proxy = await start_proxy({"full": url_of(full), "roomy": url_of(roomy)}, router="residency")
    ledger = proxy.server.app[PROXY].calls.ledger
    store = proxy.server.app[PROXY].calls.store

    async def settled() -> None:  # the app's once-a-second refresh of the fleet's loads (store.py rule 5)
        store.refresh_loads(await store.engine_loads())

    for n in range(4):  # an engine that has not reported counts as empty: both report within a few
        if ledger.resident("full") is not None and ledger.resident("roomy") is not None:
            break
        await proxy.post("/v1/chat/completions", json=chat_body(), headers={"X-Program-Id": f"warm-{n}"})
        await settled()
    assert ledger.resident("full") == 0.9 and ledger.resident("roomy") == 0.1
    seen = len(roomy.seen)
    for n in range(4):  # new programs, no load anywhere: the resident share decides
        await proxy.post("/v1/chat/completions", json=chat_body(), headers={"X-Program-Id": f"new-{n}"})
        await settled()
    assert len(roomy.seen) == seen + 4
    assert ledger.resident("full", now=time.monotonic() + 31) is None  # stale: counts as unreported


async def test_a_client_cannot_forge_the_priority_context(start_backend, start_proxy) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)})
    forged = {"X-Program-Id": "p", "X-Autellix-Program-Service": "0", "X-Autellix-Call-Id": "evil"}
    await proxy.post("/v1/chat/completions", json=chat_body(), headers=forged)
    await proxy.post("/v1/chat/completions", json=chat_body(), headers=forged)
    assert float(backend.seen[1]["X-Autellix-Program-Service"]) == 2.0
    assert backend.seen[1]["X-Autellix-Call-Id"] != "evil"


async def test_a_clients_own_priority_never_reaches_the_backend(start_backend, start_proxy) -> None:
    backend = await start_backend(mode="engine")  # a bare engine: no sidecar would overwrite it
    proxy = await start_proxy({"e1": url_of(backend)})
    for priority in (-100, 2**70, "high", None):
        reply = await proxy.post("/v1/chat/completions", json=chat_body(priority=priority, temperature=0.5))
        assert reply.status == 200
        forwarded = json.loads(backend.bodies[-1])
        assert "priority" not in forwarded and forwarded == chat_body(temperature=0.5)
    escaped = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "\\u0070riority": -100}'
    reply = await proxy.post(
        "/v1/chat/completions", data=escaped, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 200 and "priority" not in json.loads(backend.bodies[-1])
    raw = json.dumps(chat_body(), indent=3).encode()  # without one, the client's bytes pass unchanged
    reply = await proxy.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 200 and backend.bodies[-1] == raw


async def test_without_a_report_the_proxy_measures_and_a_one_call_program_is_ended(
    start_backend, start_proxy
) -> None:
    backend = await start_backend(mode="engine")
    proxy = await start_proxy({"e1": url_of(backend)})
    reply = await proxy.post("/v1/chat/completions", json=chat_body(stream=True))
    assert await reply.read() == b"".join(STREAM_EVENTS) + DONE
    store = proxy.server.app[PROXY].store
    assert len(store.local) == 0 and await store.engine_loads() == {}
    reply = await proxy.post("/v1/chat/completions", json=chat_body(), headers={"X-Program-Id": "q"})
    state = await (await proxy.get("/v1/programs/q")).json()
    assert state["calls_completed"] == 1 and state["service_plas"] > 0 and state["wait"] == 0


async def test_a_503_before_the_first_byte_is_retried_on_another_backend(start_backend, start_proxy) -> None:
    busy = await start_backend(mode="503")
    fine = await start_backend()
    proxy = await start_proxy({"a": url_of(busy), "b": url_of(fine)}, router="round_robin")
    for _ in range(4):
        reply = await proxy.post("/v1/chat/completions", json=chat_body(), headers={"X-Program-Id": "p"})
        assert reply.status == 200
    state = await (await proxy.get("/v1/programs/p")).json()
    assert state["calls_failed"] == len(busy.seen) > 0  # the failed attempts, with no service added
    assert state["service_plas"] == 2.0 * 4
    metrics = await (await proxy.get("/metrics")).text()
    assert 'autellix_proxy_retries_total{engine="a"}' in metrics


async def test_a_backend_that_refuses_connections_leaves_the_pool_after_the_threshold(
    start_backend, start_proxy
) -> None:
    fine = await start_backend()
    dead = await start_backend(mode="dead")
    proxy = await start_proxy({"dead": url_of(dead), "b": url_of(fine)}, router="round_robin")
    pool = proxy.server.app[PROXY].pool
    backend = pool.by_id["dead"]
    backend.health = HealthState(healthy=True, admitted=True)  # as if it had died after its last check
    backend.models = {"m": {"id": "m"}}
    seen: list[tuple[int, bool]] = []
    for _ in range(8):
        reply = await proxy.post("/v1/chat/completions", json=chat_body())
        assert reply.status == 200  # every call that found it dead was retried on the other backend
        seen.append((backend.health.failures, backend.healthy))
    assert (1, True) in seen and (2, True) in seen  # suspect, but still in the pool
    assert seen[-1] == (3, False) and len(fine.seen) == 8  # out at the third; then never tried again
    metrics = await (await proxy.get("/metrics")).text()
    assert 'autellix_proxy_upstream_errors_total{engine="dead",kind="connect"} 3.0' in metrics
    assert 'autellix_proxy_backend_healthy{engine="dead"} 0.0' in metrics


async def test_the_health_thresholds_come_from_the_settings(start_backend, start_proxy) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)}, health_failure_threshold=5, health_success_threshold=1)
    thresholds = proxy.server.app[PROXY].pool.thresholds
    assert (thresholds.failures, thresholds.successes) == (5, 1)


async def test_errors_after_retries_pass_the_backend_status_through(start_backend, start_proxy) -> None:
    busy = await start_backend(mode="503")
    proxy = await start_proxy({"a": url_of(busy)}, retries=1)
    reply = await proxy.post("/v1/chat/completions", json=chat_body())
    assert reply.status == 503
    assert (await reply.json())["error"]["message"] == "overloaded"
    assert len(busy.seen) == 1  # the only backend failed: nothing left to retry on
    bad = await start_backend(mode="400")
    proxy = await start_proxy({"a": url_of(bad)})
    reply = await proxy.post("/v1/chat/completions", json=chat_body())
    assert reply.status == 400 and (await reply.json())["error"]["message"] == "bad max_tokens"


async def test_bad_input_gets_openai_errors(start_backend, start_proxy) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)}, max_body_bytes=2048)
    cases = [
        (b"{oops", {}, 400, "invalid_json"),
        (json.dumps({"model": "m", "messages": "x"}).encode(), {}, 400, "invalid_type"),
        (json.dumps({"model": "m"}).encode(), {}, 400, "missing_field"),
        (json.dumps(chat_body(stream="no")).encode(), {}, 400, "invalid_type"),
        (json.dumps(chat_body(model="other")).encode(), {}, 404, "model_not_found"),
        (json.dumps(chat_body(big="x" * 4000)).encode(), {}, 413, "body_too_large"),
        (json.dumps(chat_body()).encode(), {"X-Program-Id": "p" * 300}, 400, "invalid_header"),
        (json.dumps(chat_body()).encode(), {"X-Thread-Id": "t\xa0x"}, 400, "invalid_header"),
    ]
    for raw, headers, status, code in cases:
        reply = await proxy.post("/v1/chat/completions", data=raw, headers=headers)
        assert reply.status == status, (raw[:40], await reply.text())
        error = (await reply.json())["error"]
        assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert backend.seen == []  # nothing bad reached the engine
    reply = await proxy.get("/v1/nothing-here")
    assert reply.status == 404 and (await reply.json())["error"]["code"] == "not_found"


async def test_no_healthy_backend_is_503(start_backend, start_proxy) -> None:
    dead = await start_backend(mode="dead")
    proxy = await start_proxy({"dead": url_of(dead)})
    reply = await proxy.post("/v1/chat/completions", json=chat_body())
    assert reply.status == 503 and (await reply.json())["error"]["code"] == "no_backend"
    assert (await proxy.get("/ready")).status == 503
    assert (await proxy.get("/health")).status == 200


async def test_models_are_the_union_of_the_backends(start_backend, start_proxy) -> None:
    one = await start_backend(model="m")
    two = await start_backend(model="n")
    proxy = await start_proxy({"a": url_of(one), "b": url_of(two)})
    models = await (await proxy.get("/v1/models")).json()
    assert [card["id"] for card in models["data"]] == ["m", "n"]
    reply = await proxy.post("/v1/chat/completions", json=chat_body(model="n"))
    assert reply.status == 200 and len(two.seen) == 1 and one.seen == []


async def test_program_lifecycle_endpoints(start_backend, start_proxy) -> None:
    backend = await start_backend()
    proxy = await start_proxy({"e1": url_of(backend)})
    created = await (await proxy.post("/v1/programs")).json()
    program_id = created["id"]
    state = await (await proxy.get(f"/v1/programs/{program_id}")).json()
    assert state["calls_started"] == 0
    named = await proxy.post("/v1/programs", json={"id": "mine"})
    assert named.status == 201 and (await named.json())["id"] == "mine"
    assert (await proxy.post("/v1/programs", json={"id": 3})).status == 400
    assert (await proxy.post("/v1/programs", data=b"[")).status == 400
    deleted = await proxy.delete(f"/v1/programs/{program_id}")
    assert deleted.status == 200 and (await deleted.json())["deleted"] is True
    assert (await proxy.get(f"/v1/programs/{program_id}")).status == 404
    assert (await proxy.delete(f"/v1/programs/{program_id}")).status == 404


async def test_a_pin_on_an_unusable_engine_gives_the_attempt_back_and_reroutes(
    start_backend, start_proxy
) -> None:
    first = await start_backend()
    second = await start_backend()
    proxy = await start_proxy(
        {"a": url_of(first), "b": url_of(second)}, router_params={"short_call_max_tokens": 10}
    )
    long_call = chat_body(messages=[{"role": "user", "content": "w" * 400}])
    reply = await proxy.post("/v1/chat/completions", json=long_call, headers={"X-Program-Id": "p"})
    assert reply.status == 200
    state = await (await proxy.get("/v1/programs/p")).json()
    pinned = state["pinned_engine"]
    other = "b" if pinned == "a" else "a"
    app = proxy.server.app[PROXY]
    app.pool.by_id[pinned].health = HealthState(healthy=False, admitted=True)
    app.store.mirror.forget("p")  # a replica that never saw the pin: it asks to pin, the table redirects
    reply = await proxy.post("/v1/chat/completions", json=long_call, headers={"X-Program-Id": "p"})
    assert reply.status == 200
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["pinned_engine"], state["calls_started"], state["calls_failed"]) == (pinned, 3, 1)
    served = {"a": first, "b": second}
    assert len(served[other].seen) == 1 and len(served[pinned].seen) == 1
    metrics = await (await proxy.get("/metrics")).text()
    assert f'autellix_proxy_routing_decisions_total{{engine="{pinned}",reason="pin_redirect"}} 1.0' in metrics


async def test_a_stream_broken_mid_way_ends_with_an_sse_error_event(start_backend, start_proxy) -> None:
    backend = await start_backend(mode="broken")
    proxy = await start_proxy({"e1": url_of(backend)})
    reply = await proxy.post(
        "/v1/chat/completions", json=chat_body(stream=True), headers={"X-Program-Id": "p"}
    )
    assert reply.status == 200
    data = await reply.read()
    assert data.startswith(STREAM_EVENTS[0])
    events = [e for e in data.split(b"\n\n") if e]
    assert json.loads(events[1].removeprefix(b"data: "))["error"]["code"] == "upstream_error"
    assert events[-1] == b"data: [DONE]"
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["calls_completed"], state["calls_failed"], state["in_flight"]) == (1, 1, [])


async def test_a_stream_that_ends_cleanly_before_its_last_event_ends_with_an_sse_error_event(
    start_backend, start_proxy
) -> None:
    """A sidecar whose engine was killed mid-stream closes its stream after its report, without
    ``[DONE]``: the client must still get the error event and ``[DONE]`` (seen in bench_faults.py)."""
    backend = await start_backend(mode="cut")
    proxy = await start_proxy({"e1": url_of(backend)})
    reply = await proxy.post(
        "/v1/chat/completions", json=chat_body(stream=True), headers={"X-Program-Id": "p"}
    )
    assert reply.status == 200
    events = [e for e in (await reply.read()).split(b"\n\n") if e]
    assert events[0] == STREAM_EVENTS[0].strip()
    assert json.loads(events[1].removeprefix(b"data: "))["error"]["code"] == "upstream_error"
    assert events[-1] == b"data: [DONE]"
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["calls_completed"], state["calls_failed"], state["in_flight"]) == (1, 1, [])


async def test_the_reply_ends_at_done_even_if_the_engine_keeps_its_stream_open(
    start_backend, start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await start_backend(mode="linger")
    proxy = await start_proxy({"e1": url_of(backend)})
    with caplog.at_level(logging.WARNING):
        reply = await proxy.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-Program-Id": "p"}
        )
        assert await asyncio.wait_for(reply.read(), 10) == b"".join(STREAM_EVENTS) + DONE
        state = await (await proxy.get("/v1/programs/p")).json()
        assert (state["calls_completed"], state["calls_failed"], state["in_flight"]) == (1, 0, [])
        assert not backend.release.is_set()  # the engine still holds its stream: read in the background
        backend.release.set()
        background = proxy.server.app[PROXY].background
        await asyncio.wait_for(asyncio.gather(*background), 10)
    assert not [r for r in caplog.records if r.name.startswith("autellix")]


async def test_a_client_that_closes_right_after_done_completes_its_call(start_backend, start_proxy) -> None:
    backend = await start_backend(mode="linger")
    proxy = await start_proxy({"e1": url_of(backend)})
    body = json.dumps(chat_body(stream=True)).encode()
    reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        + f"X-Program-Id: p\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b"data: [DONE]" not in received:
        received += await asyncio.wait_for(reader.read(65536), 10)
    writer.close()  # at once, while the engine still holds its stream open
    await writer.wait_closed()
    state = await (await proxy.get("/v1/programs/p")).json()
    assert (state["calls_completed"], state["calls_failed"], state["in_flight"]) == (1, 0, [])
    backend.release.set()
    url = str(proxy.make_url("/v1/chat/completions"))
    async with aiohttp.ClientSession() as session, session.post(url, json=chat_body()) as reply:
        assert reply.status == 200  # the proxy keeps serving
    metrics = await (await proxy.get("/metrics")).text()
    assert 'route="/v1/chat/completions",status="200"} 2.0' in metrics


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({}, 401, None),  # an open proxy: the client's key went upstream, the engine's 401 is theirs
        ({"backend_api_key": "proxy-key"}, 502, "upstream_auth"),  # the proxy's credential was rejected
    ],
)
async def test_a_backends_401_is_the_clients_only_when_the_clients_key_went_upstream(
    start_backend, start_proxy, overrides: dict[str, Any], status: int, code: str | None
) -> None:
    backend = await start_backend(mode="401")
    proxy = await start_proxy({"e1": url_of(backend)}, **overrides)
    reply = await proxy.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer c"})
    assert reply.status == status
    if code is not None:
        body = await reply.json()
        assert body["error"]["code"] == code and "backend-api-key" in body["error"]["message"]
