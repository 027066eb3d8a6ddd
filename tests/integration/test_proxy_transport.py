"""The production transport (proxy/transport.py) over real sockets: how it sorts out what a backend does,
and one proxy process in front of a backend that sets cookies (the session must keep no jar)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import aiohttp
import httpx
import pytest
from aiohttp import web

from autellix.launch import ServiceProcess, free_port
from autellix.proxy.transport import AiohttpTransport, UpstreamBroken, UpstreamRequest, UpstreamUnavailable
from tests.integration.recording import LoopbackApp

pytestmark = pytest.mark.integration


class CookieBackend(LoopbackApp):
    """Answers every call with a Set-Cookie, as a backend behind a session-affine LB may; records the
    Cookie header of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.cookies: list[str | None] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.Response:
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})
        if request.path != "/v1/chat/completions":
            return web.json_response({"status": "ok"})
        self.cookies.append(request.headers.get("Cookie"))
        reply = web.json_response({"choices": [{"message": {"content": "hey"}}]})
        reply.headers["Set-Cookie"] = "backend-session=secret-of-the-first-client; Path=/"
        return reply


def test_a_backends_cookie_never_rides_on_another_clients_call(
    proxy_factory: Callable[..., ServiceProcess],
) -> None:
    with CookieBackend() as backend:
        # by a host name: aiohttp's default jar ignores cookies of bare IP addresses, not of DNS names
        proxy = proxy_factory("--backend", f"e1={backend.url.replace('127.0.0.1', 'localhost')}")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _client in range(2):  # two clients, each with its own (empty) cookie jar
            with httpx.Client(timeout=30) as client:
                reply = client.post(proxy.url + "/v1/chat/completions", json=body)
                assert reply.status_code == 200
                assert "secret-of-the-first-client" in reply.headers.get("Set-Cookie", "")  # passed through
        assert backend.cookies == [None, None]


async def test_a_refused_connection_speaks_about_the_backend() -> None:
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session, connect_timeout=2.0, read_timeout=5.0)
        with pytest.raises(UpstreamUnavailable) as caught:
            await transport.send(UpstreamRequest("GET", f"http://127.0.0.1:{free_port()}/health"))
    assert (caught.value.kind, caught.value.unreachable) == ("connect", True)
    assert caught.value.reason.startswith("ClientConnectorError")


async def test_a_silent_backend_times_out_without_counting_against_it() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    port = listener.getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session, connect_timeout=2.0, read_timeout=0.2)
            with pytest.raises(UpstreamUnavailable) as caught:
                await transport.send(UpstreamRequest("POST", f"http://127.0.0.1:{port}/v1/x", body=b"{}"))
            assert (caught.value.kind, caught.value.unreachable) == ("timeout", False)
            with pytest.raises(UpstreamUnavailable) as total:  # a request with a total limit
                await transport.send(UpstreamRequest("GET", f"http://127.0.0.1:{port}/ready", timeout=0.2))
            assert total.value.kind == "timeout"
    finally:
        listener.close()


async def test_a_reply_is_read_chunk_by_chunk_and_a_break_is_upstream_broken() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        await asyncio.sleep(0.05)
        await response.write(b"data: 2\n\n")
        if request.query.get("break"):
            assert request.transport is not None
            request.transport.abort()  # the backend dies mid-reply
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/s", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session, connect_timeout=2.0, read_timeout=5.0)
            reply = await transport.send(UpstreamRequest("GET", f"http://127.0.0.1:{port}/s"))
            assert (reply.status, reply.content_type) == (200, "text/event-stream")
            seen = b""
            while chunk := await reply.readany():
                seen += chunk
            assert seen == b"data: 1\n\ndata: 2\n\n" and reply.at_eof()
            reply.release()
            broken = await transport.send(UpstreamRequest("GET", f"http://127.0.0.1:{port}/s?break=1"))
            with pytest.raises(UpstreamBroken):
                while await broken.readany():
                    pass
            broken.close()
    finally:
        await runner.cleanup()
