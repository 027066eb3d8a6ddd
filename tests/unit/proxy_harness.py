"""The in-process proxy of the proxy unit tests: a recording backend and proxies built from flags.

``RecordingBackend`` stands in for a sidecar and records the path and headers of every request;
``recording_backends(n)`` serves n of them on loopback; ``proxy_starter(settings_of)`` yields
``start(*flags)``, which builds the proxy's settings with ``settings_of`` and serves the app with
aiohttp's test client. Everything started is closed when the context ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from autellix.proxy.app import create_app
from autellix.proxy.config import ProxySettings

ProxyClient = TestClient[web.Request, web.Application]
ProxyStarter = Callable[..., Awaitable[ProxyClient]]


@dataclass
class RecordingBackend:
    """A sidecar stand-in that records the path and headers of every request it gets."""

    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server: TestServer | None = None

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.path, dict(request.headers)))
            if request.path == "/v1/models":
                return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})
            if request.path == "/v1/chat/completions":
                await request.read()
                return web.json_response({"choices": [{"message": {"content": "hey"}}]})
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app

    def calls(self) -> list[dict[str, str]]:
        return [headers for path, headers in self.seen if path == "/v1/chat/completions"]

    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


@asynccontextmanager
async def recording_backends(count: int) -> AsyncIterator[list[RecordingBackend]]:
    started: list[RecordingBackend] = []
    try:
        for _ in range(count):
            recorder = RecordingBackend()
            recorder.server = TestServer(recorder.app(), host="127.0.0.1")
            await recorder.server.start_server()
            started.append(recorder)
        yield started
    finally:
        for recorder in started:
            assert recorder.server is not None
            await recorder.server.close()


@asynccontextmanager
async def proxy_starter(
    settings_of: Callable[[list[str]], ProxySettings], *, handler_cancellation: bool = False
) -> AsyncIterator[ProxyStarter]:
    clients: list[ProxyClient] = []

    async def start(*argv: str) -> ProxyClient:
        server = TestServer(
            create_app(settings_of(list(argv))), host="127.0.0.1", handler_cancellation=handler_cancellation
        )
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
