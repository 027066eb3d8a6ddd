"""What the live load generator sends and how it counts failures, against an in-process fake server.

The fake is the outermost edge (the runner's peer), not one of our services: it records every request
and misbehaves on purpose (an HTTP error, an SSE error event, a stream cut short, silence), which no
real engine does on demand. Behaviour is chosen by the program id the runner sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.runner import LiveOptions, run_programs

pytestmark = pytest.mark.integration

TOKEN_GAP = 0.02  # wall seconds between the fake's tokens


@dataclass
class Fake:
    url: str = ""
    requests: list[tuple[dict[str, str], dict[str, object]]] = field(default_factory=list)


FAKE = web.AppKey("fake", Fake)


def chunk(content: str | None, usage: dict[str, object] | None = None) -> bytes:
    event: dict[str, object] = {"object": "chat.completion.chunk", "choices": []}
    if content is not None:
        event["choices"] = [{"index": 0, "delta": {"content": content}}]
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    body = await request.json()
    fake.requests.append((dict(request.headers), body))
    program_id = request.headers.get("X-Program-Id", "")
    if program_id.startswith("http429"):
        return web.json_response({"error": {"message": "slow down"}}, status=429)
    if program_id.startswith("silent"):
        await asyncio.sleep(2)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    tokens = int(body["max_tokens"])
    for i in range(tokens):
        if program_id.startswith("cut") and i == 2:
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-stream
            return response
        await response.write(chunk(f"t{i} "))
        await asyncio.sleep(TOKEN_GAP)
    if program_id.startswith("errorevent"):
        await response.write(b'data: {"error": {"message": "engine died", "code": 500}}\n\n')
    else:
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": tokens,
            "prompt_tokens_details": {"cached_tokens": 4},
        }
        await response.write(b": a comment line the client must skip\n\n")
        await response.write(chunk(None, usage))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def models(_request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    state = Fake()
    app = web.Application()
    app[FAKE] = state
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def two_threads(program_id: str, tokens: int = 4) -> ProgramSpec:
    messages = (Message("system", "be brief"), Message("user", "go"), Message("user", "again"))
    calls = (
        CallSpec(0, (0, 1), tokens, thread=0),
        CallSpec(1, (0, 2), tokens, parents=(0,), thread=1),
        CallSpec(2, (0, 2), tokens, parents=(0,), thread=2),
    )
    return ProgramSpec(program_id, "custom", 0.0, messages, calls)


async def test_headers_body_and_the_discovered_model(fake: Fake):
    options = LiveOptions(url=fake.url, program_id_suffix="~run1")
    result = await run_programs([two_threads("p")], options)
    assert result.model == "fake-model" and result.errors == ()
    assert len(fake.requests) == 3
    threads = sorted(headers["X-Thread-Id"] for headers, _ in fake.requests)
    assert threads == ["0", "1", "2"]
    for headers, body in fake.requests:
        assert headers["X-Program-Id"] == "p~run1"
        assert body["model"] == "fake-model" and body["max_tokens"] == 4 and body["ignore_eos"] is True
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert fake.requests[0][1]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "go"},
    ]
    assert result.summary.prompt_tokens == 33 and result.summary.prefix_cache_hit_rate == pytest.approx(
        4 / 11
    )


async def test_agentic_context_names_the_program_and_its_last_call(fake: Fake):
    # vllm-router's program scheduling reads vllm_xargs.agentic_context; the last call issued (of a DAG:
    # whichever thread goes last) says expected_resume false; without the option the body has none
    await run_programs([two_threads("p")], LiveOptions(url=fake.url, program_id_suffix="~r"))
    assert all("vllm_xargs" not in body for _, body in fake.requests)
    fake.requests.clear()
    options = LiveOptions(url=fake.url, program_id_suffix="~r", agentic_context=True)
    result = await run_programs([two_threads("p")], options)
    assert result.errors == () and len(fake.requests) == 3
    xargs = [body["vllm_xargs"] for _, body in fake.requests]
    contexts = sorted((json.loads(x["agentic_context"]) for x in xargs if isinstance(x, dict)),
                      key=lambda c: int(c["step_id"]))  # fmt: skip
    assert [(c["step_id"], c["expected_resume"]) for c in contexts] == [(1, True), (2, True), (3, False)]
    assert {c["program_id"] for c in contexts} == {"p~r"}
    assert all(headers["X-Program-Id"] == "p~r" for headers, _ in fake.requests)


async def test_without_program_headers_calls_are_anonymous(fake: Fake):
    await run_programs([two_threads("p")], LiveOptions(url=fake.url, program_headers=False))
    assert all("X-Program-Id" not in h and "X-Thread-Id" not in h for h, _ in fake.requests)


async def test_times_are_divided_by_the_time_scale(fake: Fake):
    result = await run_programs([two_threads("p", tokens=6)], LiveOptions(url=fake.url, time_scale=0.1))
    # The fake waits TOKEN_GAP wall seconds between tokens: TOKEN_GAP / 0.1 simulated seconds.
    assert TOKEN_GAP / 0.1 * 0.9 <= result.call_itl.mean <= TOKEN_GAP / 0.1 * 1.6
    assert result.token_gap == pytest.approx(result.call_itl.mean, rel=0.2)


async def test_errors_are_counted_by_kind_and_end_their_programs(fake: Fake):
    programs = [two_threads(name) for name in ("http429", "errorevent", "cut", "silent", "fine")]
    options = LiveOptions(url=fake.url, model="m", read_timeout=0.5, program_id_suffix="")
    result = await run_programs(programs, options)
    assert result.errors_by_kind == {"http_429": 1, "stream": 2, "timeout": 1}
    assert {e.program_id: e.kind for e in result.errors} == {
        "http429": "http_429",
        "errorevent": "stream",
        "cut": "stream",
        "silent": "timeout",
    }
    # A failed root issues no children: only the healthy program's calls completed.
    assert result.summary.programs_completed == 1 and result.summary.calls_completed == 3
    assert result.summary.programs_incomplete == 4
