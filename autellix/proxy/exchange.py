"""One attempt against one backend: send the call, sort out what came back (calls.py rules 3-6).

1. The body goes out unchanged with the call's priority context (``X-Autellix-*``, headers.py).
2. Before the first byte, a connection failure (transport.py's :class:`~.transport.UpstreamUnavailable`)
   or a 502/503 answer ends the attempt as failed (no service added) and raises :class:`Retry`: the
   call may go to another engine. A failure that speaks about the backend (refused, unreachable,
   connect timeout) is also one failed health observation of it (backends.py rule 2).
3. When the proxy owns the upstream credential (it checks API keys or sends ``--backend-api-key``), a
   backend's 401/403 rejects the proxy's credential, not the client's: a 502 ``upstream_auth``.
4. A whole reply is read, its report (``X-Autellix-Report``) or the measurement (execution = request
   sent → reply, wait 0) finishes the attempt, and it goes to the client with its status; a read that
   breaks off is a 502. An SSE reply is relayed (relay.py).
5. The call's deadline (limits.py rule 4) bounds the wait for the reply's head and the read of a
   whole reply (then a 504, autellix/deadlines.py rule 2); what is left of it goes upstream in
   ``X-Request-Timeout`` (rule 3 there), so a sidecar drops the call from its queue in time. A
   sidecar's 429 (its queue is full) is tried on another engine like a 503; after the last retry the
   client gets it, with its ``Retry-After``.
6. Whatever else ends the attempt (the client left: the handler is cancelled; a write failed; the
   unforeseen) finishes it as failed in the background, with the time measured so far; the upstream
   reply is closed, which aborts the call in the sidecar or engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping

from aiohttp import web

from autellix.api_errors import ApiError, error_message
from autellix.deadlines import DEADLINE_HEADER, deadline_exceeded, header_value
from autellix.engine_adapters.protocol import REPORT_HEADER, CallContext

from .apis import Api, CallBody
from .attempt import Attempt, Ledger
from .backends import Backend, BackendPool
from .headers import client_headers, upstream_headers
from .metrics import ProxyMetrics
from .programs import CallStartResult, StoredReply
from .relay import StreamRelay
from .transport import Transport, UpstreamBroken, UpstreamReply, UpstreamRequest, UpstreamUnavailable

log = logging.getLogger("autellix.proxy.forward")

_RETRY_STATUSES = frozenset({429, 502, 503})


class Retry(Exception):
    """Rule 2: an attempt failed before its first byte; the call may go to another engine."""

    def __init__(self, kind: str, error: ApiError) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error


class Exchange:
    def __init__(
        self,
        transport: Transport,
        pool: BackendPool,
        ledger: Ledger,
        relay: StreamRelay,
        metrics: ProxyMetrics,
        owns_upstream_credential: bool = False,
    ) -> None:
        self.transport = transport
        self.pool = pool
        self.ledger = ledger
        self.relay = relay
        self.metrics = metrics
        self.owns_upstream_credential = owns_upstream_credential

    async def run(
        self,
        request: web.Request,
        api: Api,
        backend: Backend,
        body: CallBody,
        raw: bytes,
        thread_id: str | None,
        result: CallStartResult,
        attempt: Attempt,
    ) -> web.StreamResponse:
        context = CallContext(
            program_id=result.program_id,
            call_id=attempt.call_id,
            thread_id=thread_id,
            program_service=result.service_plas,
            program_critical_path=result.service_atlas,
            program_wait=result.program_wait,
            arrival=time.time(),
            input_tokens=body.input_tokens,
        )
        headers = upstream_headers(request.headers.items(), context)
        left = attempt.left(asyncio.get_running_loop().time())
        if left is not None:
            if left <= 0:
                await self.ledger.finish(attempt, None, 0.0, 0.0, ok=False, end=attempt.one_shot)
                raise deadline_exceeded(attempt.timeout, "before the call was sent")
            headers[DEADLINE_HEADER] = header_value(left)
        engine = backend.engine_id
        ledger = self.ledger
        backend.in_flight += 1
        self.metrics.child(self.metrics.in_flight, engine).inc()
        attempt.sent = time.perf_counter()
        reply: UpstreamReply | None = None
        try:
            try:
                sending = UpstreamRequest("POST", backend.url + api.path, headers, raw)
                async with asyncio.timeout(left):
                    reply = await self.transport.send(sending)
            except TimeoutError:  # rule 5: only the deadline's (the transport raises its own kinds)
                elapsed = time.perf_counter() - attempt.sent
                await ledger.finish(attempt, None, elapsed, 0.0, ok=False, end=attempt.one_shot)
                raise deadline_exceeded(attempt.timeout, "before the engine answered") from None
            except UpstreamUnavailable as exc:  # rule 2
                if exc.unreachable:
                    self.pool.record_call_failure(engine, exc.reason)
                await ledger.finish(attempt, None, 0.0, 0.0, ok=False, end=False)
                if exc.kind == "timeout":
                    raise Retry(
                        "timeout", ApiError(504, f"Upstream {engine} timed out", code="upstream_timeout")
                    ) from None
                error = ApiError(502, f"Upstream {engine} unreachable: {exc}", code="upstream_unavailable")
                raise Retry("connect", error) from None
            if reply.status in _RETRY_STATUSES:
                data = await reply.read()
                await ledger.finish(attempt, None, 0.0, 0.0, ok=False, end=False)
                raise Retry(f"status_{reply.status}", _passthrough_error(reply.status, data, reply.headers))
            if reply.status in (401, 403) and self.owns_upstream_credential:  # rule 3
                await reply.read()
                await ledger.finish(attempt, None, 0.0, 0.0, ok=False, end=attempt.one_shot)
                self.metrics.upstream_errors.labels(engine, "auth").inc()
                log.warning("backend %s answered %d to the proxy's credential (--backend-api-key)", engine,
                            reply.status)  # fmt: skip
                raise ApiError(
                    502,
                    f"Upstream {engine} rejected the proxy's credential; the operator must check "
                    "--backend-api-key",
                    code="upstream_auth",
                )
            if reply.content_type == "text/event-stream":
                response = await self.relay.relay(request, reply, api, engine, attempt)
            else:
                response = await self._whole(reply, api, engine, attempt)
            self.metrics.child(self.metrics.added_latency, "true" if body.stream else "false").observe(
                max(0.0, (time.perf_counter() - attempt.started) - (attempt.upstream_end - attempt.sent))
            )
            return response
        except BaseException:  # rule 5
            ledger.given_up(attempt)
            raise
        finally:
            if reply is not None and not attempt.draining:
                reply.close()
            backend.in_flight -= 1
            self.metrics.child(self.metrics.in_flight, engine).dec()

    async def _whole(self, reply: UpstreamReply, api: Api, engine: str, attempt: Attempt) -> web.Response:
        """Rule 4 (and calls.py rule 9: a stored reply's id is remembered before the client has it)."""
        ledger = self.ledger
        try:
            async with asyncio.timeout(attempt.left(asyncio.get_running_loop().time())):
                data = await reply.read()
        except TimeoutError:  # rule 5
            elapsed = time.perf_counter() - attempt.sent
            await ledger.finish(attempt, None, 0.0, elapsed, ok=False, end=attempt.one_shot)
            raise deadline_exceeded(attempt.timeout, "while the reply was read") from None
        except UpstreamBroken as exc:
            self.metrics.upstream_errors.labels(engine, "midstream").inc()
            elapsed = time.perf_counter() - attempt.sent
            await ledger.finish(attempt, None, 0.0, elapsed, ok=False, end=attempt.one_shot)
            raise ApiError(502, f"Upstream {engine} failed mid-reply: {exc}", code="upstream_error") from None
        attempt.upstream_end = time.perf_counter()
        if api.reply_id is not None and reply.status < 400:
            reply_id = api.reply_id(data)
            if reply_id is not None:
                stored = StoredReply(attempt.program_id, engine)
                await ledger.store.remember_reply(reply_id, stored, time.time())
        report = ledger.report(reply.headers.get(REPORT_HEADER))
        exec_time = attempt.upstream_end - attempt.sent
        await ledger.finish(attempt, report, 0.0, exec_time, ok=reply.status < 400, end=attempt.one_shot)
        return web.Response(status=reply.status, body=data, headers=client_headers(reply.headers.items()))


def _passthrough_error(status: int, data: bytes, headers: Mapping[str, str]) -> ApiError:
    """A backend's 429/502/503 after the last retry: its own message when it sent an error body (and a
    429's ``Retry-After``)."""
    message = f"Upstream answered {status}"
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        message = error_message(json.loads(data)) or message
    if status == 429:
        wait = headers.get("Retry-After", "1")
        return ApiError(429, message, code="rate_limit_exceeded", headers={"Retry-After": wait})
    return ApiError(status, message, code="upstream_unavailable")
