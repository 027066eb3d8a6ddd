"""The proxy app in-process with the Responses and Messages APIs, against made-up engines behind a
mock transport: a chain sticks to its program and its engine, stored responses are read where they
live, Messages errors and keys in Anthropic's ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from autellix.engine_adapters.protocol import REPORT_HEADER, CompletionReport
from autellix.proxy.app import PROXY, create_app
from autellix.proxy.config import ProxySettings
from autellix.proxy.transport import MockReply, MockTransport, UpstreamRequest


class StoringEngines:
    """Two engines that store the responses they make (``resp_<engine>_<n>``) and know no other's."""

    def __init__(self) -> None:
        self.stored: dict[str, set[str]] = {"a": set(), "b": set()}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.transport = MockTransport(self.answer)

    async def answer(self, request: UpstreamRequest) -> MockReply:
        engine, path = request.url.removeprefix("http://").split(".test", 1)
        if path == "/v1/models":
            return MockReply.json({"data": [{"id": "m"}]})
        if path in ("/ready", "/health"):
            return MockReply(200, b"ok")
        self.seen.append((engine, path, dict(request.headers)))
        if path.startswith("/v1/responses/"):
            rid = path.split("/")[3]
            if rid not in self.stored[engine]:
                return MockReply.json({"error": {"message": "not found"}}, status=404)
            return MockReply.json({"object": "response", "id": rid, "status": "completed"})
        body = json.loads(request.body or b"{}")
        report = CompletionReport(request.headers.get("X-Autellix-Call-Id", "?"), 0.0, 1.0, 5, 2, 3)
        headers = {REPORT_HEADER: report.to_json()}
        if path == "/v1/messages":
            return MockReply.json({"type": "message", "content": [], "usage": {}}, headers=headers)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored[engine]:
            return MockReply.json({"error": {"message": f"Response with id '{previous}' not found."}}, 404)
        rid = f"resp_{engine}_{len(self.stored[engine])}"
        self.stored[engine].add(rid)
        if body.get("stream"):
            created = {"type": "response.created", "response": {"id": rid}}
            done = {"type": "response.completed", "response": {"id": rid}}

            async def events() -> AsyncIterator[bytes]:
                yield f"event: response.created\ndata: {json.dumps(created)}\n\n".encode()
                yield report.sse_line()
                yield f"event: response.completed\ndata: {json.dumps(done)}\n\n".encode()

            return MockReply.sse(events())
        return MockReply.json({"object": "response", "id": rid}, headers=headers)


@pytest.fixture
async def proxy() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(engines: StoringEngines, **overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = ProxySettings(
            backend=["a=http://a.test", "b=http://b.test"], router="round_robin", health_check_interval=60.0,
            retry_backoff=0.0, **overrides,
        )  # fmt: skip
        client = TestClient(TestServer(create_app(settings, transport=engines.transport), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def test_a_chain_is_one_program_on_the_engine_that_stored_each_reply(proxy) -> None:
    engines = StoringEngines()
    client = await proxy(engines)
    reply = await client.post("/v1/responses", json={"model": "m", "input": "hi"})
    previous = (await reply.json())["id"]
    for turn in range(4):  # round robin would alternate engines; the stored reply holds the chain
        body = {"model": "m", "input": "more", "previous_response_id": previous, "stream": turn % 2 == 1}
        reply = await client.post("/v1/responses", json=body)
        assert reply.status == 200, await reply.text()
        raw = await reply.read()
        previous = (
            json.loads(raw)["id"] if not body["stream"] else raw.split(b'"id": "')[1].split(b'"')[0].decode()
        )
    engine = previous.split("_")[1]
    assert {seen[0] for seen in engines.seen} == {engine}
    programs = {seen[2]["X-Autellix-Program-Id"] for seen in engines.seen}
    (program_id,) = programs
    state = await (await client.get(f"/v1/programs/{program_id}")).json()
    assert (state["calls_completed"], state["output_tokens"]) == (5, 15)
    got = await client.get(f"/v1/responses/{previous}")
    assert got.status == 200 and engines.seen[-1][:2] == (engine, f"/v1/responses/{previous}")
    missing = await client.get("/v1/responses/resp_x_9")
    assert missing.status == 404 and (await missing.json())["error"]["param"] == "response_id"


async def test_a_chain_whose_engine_left_the_pool_is_a_503_not_a_call_elsewhere(proxy) -> None:
    engines = StoringEngines()
    client = await proxy(engines)
    previous = (await (await client.post("/v1/responses", json={"model": "m", "input": "hi"})).json())["id"]
    engine = previous.split("_")[1]
    client.server.app[PROXY].pool.by_id[engine].health = type(
        client.server.app[PROXY].pool.by_id[engine].health
    )()
    reply = await client.post(
        "/v1/responses", json={"model": "m", "input": "x", "previous_response_id": previous}
    )
    assert reply.status == 503 and (await reply.json())["error"]["param"] == "previous_response_id"
    assert len(engines.seen) == 1


async def test_messages_errors_and_keys_follow_anthropics_ways(proxy) -> None:
    engines = StoringEngines()
    client = await proxy(engines, api_key=["k1"], backend_api_key="backend")
    body = {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    denied = await client.post("/v1/messages", json=body)
    assert denied.status == 401 and (await denied.json())["error"]["type"] == "authentication_error"
    ok = await client.post(
        "/v1/messages", json=body, headers={"x-api-key": "k1"}
    )  # the anthropic SDK's header
    assert ok.status == 200
    sent = engines.seen[-1][2]
    # the client's key stops at the proxy (the backend key is the real transport's default header)
    assert not {"x-api-key", "authorization"} & {k.lower() for k in sent}
    bad = await client.post("/v1/messages", json={**body, "max_tokens": None}, headers={"x-api-key": "k1"})
    assert bad.status == 400 and (await bad.json()) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "'max_tokens' is required"},
    }  # fmt: skip
    chat_with_x_api_key = await client.post("/v1/chat/completions", json={}, headers={"x-api-key": "k1"})
    assert chat_with_x_api_key.status == 401  # OpenAI's routes take Bearer only
