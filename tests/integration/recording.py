"""A vLLM-like engine (or, with a completion report, a sidecar) that answers at once and records what
it was sent: for tests about which headers each hop sends, which no real engine reports back."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Self

from aiohttp import web

from autellix.engine_adapters import protocol
from autellix.engine_adapters.protocol import REPORT_HEADER, CompletionReport
from autellix.launch import free_port


class LoopbackApp:
    """An aiohttp app served on a free loopback port from a thread of its own, for a synchronous test
    (``with``); subclasses add their routes in :meth:`routes`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _serve(self) -> None:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class RecordingEngine(LoopbackApp):
    """A vLLM-like engine that answers at once and records the path and headers of every request.

    At the outermost edge on purpose: the point is which ``Authorization`` or priority context each
    request carried, which no real engine reports back.
    """

    def __init__(self, report_exec_time: float | None = None) -> None:
        super().__init__()
        self.report_exec_time = report_exec_time  # answer like a sidecar: a completion report per call
        self.seen: list[tuple[str, dict[str, str]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.headers)))
        if request.path == "/metrics":
            return web.Response(text="vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n")
        if request.path == "/server_info":
            return web.json_response({"vllm_config": {"scheduler_config": {"policy": "fcfs"}}})
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "rec", "object": "model"}]})
        if request.path != "/v1/chat/completions":
            return web.json_response({"status": "ok"})
        body = await request.json()
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        message = {"index": 0, "message": {"role": "assistant", "content": "k"}, "finish_reason": "stop"}
        reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "rec", "choices": [message]}
        if not body.get("stream"):
            headers = {}
            if self.report_exec_time is not None:
                call_id = request.headers.get(protocol.CALL_ID, "?")
                report = CompletionReport(call_id, queue_wait=0.0, exec_time=self.report_exec_time)
                headers[REPORT_HEADER] = report.to_json()
            return web.json_response({**reply, "usage": usage}, headers=headers)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        chunk = {**reply, "object": "chat.completion.chunk"}
        delta = {"index": 0, "delta": {"content": "k"}, "finish_reason": "stop"}
        for event in ({**chunk, "choices": [delta]}, {**chunk, "choices": [], "usage": usage}):
            await stream.write(f"data: {json.dumps(event)}\n\n".encode())
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        return stream

    def headers_of(self, path: str, name: str) -> list[str | None]:
        """Header ``name`` of every request to ``path`` (None: it carried none)."""
        return [
            next((v for k, v in headers.items() if k.lower() == name.lower()), None)
            for seen_path, headers in self.seen
            if seen_path == path
        ]

    def authorizations(self, path: str) -> list[str | None]:
        """The ``Authorization`` of every request to ``path`` (None: it carried none)."""
        return self.headers_of(path, "authorization")
