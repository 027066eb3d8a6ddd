"""Requests that reach an engine without being scheduled: stored responses and token counts.

None of these runs a generation, so none is queued, started in the program table or accounted:

1. ``GET /v1/responses/{id}`` (``?stream=true`` replays a background response's events) and
   ``POST /v1/responses/{id}/cancel`` go to the engine that stored the response (store.py rule 7),
   the only one that has it; a response the proxy has no record of is a 404 in OpenAI's words
   (``Response with id '...' not found.``, as vLLM says it), an engine out of the pool a 503. So is a
   response whose program another tenant owns (tenants.py rule 3).
2. ``POST /v1/messages/count_tokens`` goes to the least loaded healthy backend that serves the
   body's model (any, without one); a backend that cannot be reached is tried once more elsewhere.
3. The reply passes through as it came (status, body, headers but ours and hop-by-hop); a stream is
   relayed chunk by chunk. A backend that cannot be reached is a 502, a reply that breaks off ends.
"""

from __future__ import annotations

import contextlib
import time

from aiohttp import web

from autellix.api_errors import ApiError
from autellix.jsonbody import JsonBodyError, parse_json

from .backends import Backend, BackendPool
from .calls import tenant_of
from .headers import client_headers, upstream_headers
from .store import ProgramStore
from .transport import Transport, UpstreamBroken, UpstreamRequest, UpstreamUnavailable


class Passthrough:
    def __init__(self, transport: Transport, pool: BackendPool, store: ProgramStore) -> None:
        self.transport = transport
        self.pool = pool
        self.store = store

    async def stored_response(self, request: web.Request, suffix: str = "") -> web.StreamResponse:
        """Rule 1."""
        response_id = request.match_info["response_id"]
        stored = await self.store.find_reply(response_id, time.time())
        if stored is None or not tenant_of(request).owns(stored.program_id):
            raise ApiError(404, f"Response with id '{response_id}' not found.", code="response_not_found",
                           param="response_id")  # fmt: skip
        backend = self.pool.by_id.get(stored.engine_id)
        if backend is None or not backend.healthy:
            raise ApiError(503, f"The engine that stores response {response_id!r} ({stored.engine_id}) is "
                           "not available", code="no_backend")  # fmt: skip
        return await self._forward(request, backend, request.path_qs, b"")

    async def any_backend(self, request: web.Request) -> web.StreamResponse:
        """Rule 2."""
        raw = await request.read()
        model = None
        with contextlib.suppress(JsonBodyError):  # the backend answers for a bad body in its words
            data = parse_json(raw)
            named = data.get("model") if isinstance(data, dict) else None
            model = named if isinstance(named, str) else None
        serving = self.pool.serving(model)
        if serving is None:
            raise ApiError(404, f"The model `{model}` does not exist.", code="model_not_found", param="model")
        loads = self.store.loads
        candidates = sorted((b for b in serving if b.healthy), key=lambda b: loads.get(b.engine_id, 0))
        if not candidates:
            raise ApiError(503, "No backend available", code="no_backend")
        for backend in candidates[:2]:
            try:
                return await self._forward(request, backend, request.path_qs, raw)
            except ApiError as exc:
                if exc.code != "upstream_unavailable" or backend is candidates[:2][-1]:
                    raise
        raise AssertionError("unreachable")

    async def _forward(
        self, request: web.Request, backend: Backend, path: str, raw: bytes
    ) -> web.StreamResponse:
        """Rule 3."""
        headers = upstream_headers(request.headers.items(), None)
        try:
            sending = UpstreamRequest(request.method, backend.url + path, headers, raw or None)
            reply = await self.transport.send(sending)
        except UpstreamUnavailable as exc:
            if exc.unreachable:
                self.pool.record_call_failure(backend.engine_id, exc.reason)
            message = f"Upstream {backend.engine_id} unreachable: {exc}"
            raise ApiError(502, message, code="upstream_unavailable") from None
        try:
            answer_headers = client_headers(reply.headers.items())
            if reply.content_type != "text/event-stream":
                try:
                    data = await reply.read()
                except UpstreamBroken as exc:
                    raise ApiError(502, f"Upstream {backend.engine_id} failed mid-reply: {exc}",
                                   code="upstream_error") from None  # fmt: skip
                return web.Response(status=reply.status, body=data, headers=answer_headers)
            response = web.StreamResponse(status=reply.status, headers=answer_headers)
            await response.prepare(request)
            with contextlib.suppress(UpstreamBroken):
                while chunk := await reply.readany():
                    await response.write(chunk)
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
            return response
        finally:
            reply.close()
