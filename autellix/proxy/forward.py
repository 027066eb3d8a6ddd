"""One generation call through the proxy: identify, route, record, forward, retry, report (the IO shell).

Decisions are made elsewhere (body.py and identity.py read the request, the router picks an engine, the
program table resolves the pin and the priority context, sse.py cuts the report out of the stream);
this module moves bytes and time between them. Per call:

1. Read and check the body (413, 400), the identity (400) and the model (404 if no backend lists it).
2. Route over the backends that serve the model, with this replica's view of the fleet's loads (the
   ``engine_loads`` of the latest ``start_call``) and of the program's pin; then ``start_call`` in the
   table, which may redirect the call to the program's existing pin. On a standalone Redis, when this
   replica's mirror of the program is exact and the start decides no pin (programs/mirror.py rule 3),
   the start is written on the ordered link and the call goes on at once with the mirrored context
   and pin ("ahead"); Redis's reply is checked when it comes (mirror rule 4, counted in
   ``starts_ahead_total``). Otherwise (``--no-starts-ahead``, memory, cluster, an outage, a program
   another replica also serves) the call waits for the table's answer.
3. Forward the body unchanged (but for a client's own ``priority`` field, body.py rule 6) with the
   call's priority context (``X-Autellix-*``); the client's own ``X-Autellix-*`` headers are dropped,
   so a client cannot forge a priority.
4. Before the first byte, a connection failure or a 502/503 answer ends the attempt as failed (no
   service added) and the call is routed again without that engine, after a jittered exponential
   backoff, at most ``retries`` times. A call that cannot connect (refused, unreachable, connect
   timeout; not our own host's lack of sockets) is also one failed health observation of the backend
   (passive check, backends.py rule 2). After the first byte there is no retry: a broken stream ends
   with an SSE error event (and ``[DONE]``); a broken non-streaming read is a 502.
5. The completion report (sidecar) or, against a bare engine, the proxy's own measurement is recorded
   with ``finish_soon`` before the client gets the end of the reply (the sidecar's report precedes
   ``data: [DONE]``; a bare engine's stream is finished just before its ``data: [DONE]`` line is
   sent), so the program's next call sees the updated service. "Recorded" depends on the table
   (store.py rule 5): the memory table has applied it; a standalone Redis table has *written* it on
   the replica's ordered link and acknowledges it in the background, which keeps one Redis round trip
   off every call. The program's next call through this replica is executed by Redis after the finish
   (same connection, FIFO), so it sees the service exactly. Through another replica, its start may
   reach Redis before this finish only if the client gets the reply, sends its next call and that
   replica's start arrives, all within the finish's one-way trip to Redis (shorter than the round
   trip the next call needs to reach a proxy); it then gets the service without this call, as an
   agent's parallel calls do, and this finish still counts in the program. A Redis Cluster table
   (not ordered) is still awaited. Measurement without a sidecar (an approximation): queue wait =
   request sent → first response byte, execution = first byte → the stream's ``[DONE]`` (or last
   byte); for non-streaming replies, whose first byte is their last, execution = request sent →
   reply and wait = 0.
6. A client that disconnects cancels the handler (``handler_cancellation``); the upstream connection is
   closed, which aborts the call in the sidecar or engine, and the call is finished as failed with the
   time measured so far, in a background task that the cancellation cannot interrupt. A write that
   finds the client gone mid-stream is the same event seen first, and ends the same way. A finish is
   sent before the handler can be suspended, so a cancellation cannot lose it (on a Redis Cluster it
   is shielded and completes in the background). A start on an ordered table is not shielded: a
   cancellation while it is in flight sends a failed finish behind it, which gives the call back.
7. Once the client has the stream's last event (``data: [DONE]`` and its blank line) the call is done:
   the client's reply is ended at once, and what the upstream still sends (normally only the end of
   its chunked body) is read in the background, so a client that closes its connection right after
   ``[DONE]`` interrupts nothing and is no error.
8. A call without a program id is a program of its own, ended together with its call's finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from autellix.engine_adapters.protocol import (
    REPORT_HEADER,
    CallContext,
    CompletionReport,
    ProtocolError,
    decode_report,
)

from .backends import Backend, BackendPool
from .body import CallBody, Kind, parse_call_body
from .errors import ApiError, bad_request
from .headers import client_headers, upstream_headers
from .identity import IdentityError, extract_identity
from .metrics import ProxyMetrics
from .programs import CallFinish, CallStart, CallStartResult
from .programs.mirror import ProgramMirror, StartTicket
from .routing import EngineView, NoEngineAvailable, RouteRequest, RoutingPolicy
from .sse import ReportLine, ReportStripper
from .store import Ended, ProgramStore

log = logging.getLogger("autellix.proxy.forward")

_RETRY_STATUSES = frozenset({502, 503})
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# Connect errors of this host rather than of the backend: counting them against the backends would take
# every backend out of the pool at once.
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS, errno.ENOMEM})
_DONE_LINE = re.compile(rb"\ndata: ?\[DONE\]")
_DONE_EVENT = re.compile(rb"\ndata: ?\[DONE\]\r?\n\r?\n")
DRAIN_SECONDS = 2.0  # an upstream that keeps a stream open after [DONE] loses the connection, not the call


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    retries: int = 2
    backoff: float = 0.05
    connect_timeout: float = 2.0
    read_timeout: float = 600.0
    # the proxy, not the client, authenticates upstream (it checks keys or sends --backend-api-key): a
    # backend's 401/403 then rejects the proxy's credential, and the client gets a 502 saying so
    owns_upstream_credential: bool = False
    starts_ahead: bool = True  # rule 2: forward before Redis answers the start when the mirror is exact


@dataclass(slots=True)
class _Call:
    """One attempt's bookkeeping, shared by the steps of :meth:`Forwarder._exchange`."""

    program_id: str
    call_id: str
    one_shot: bool
    started: float  # the request's arrival (perf_counter)
    atlas_at_arrival: float = 0.0  # the ATLAS path the call inherited (the mirror's finish needs it)
    sent: float = 0.0
    upstream_end: float = 0.0
    finished: bool = False
    draining: bool = False  # the upstream reply belongs to a background drain (rule 7)


class _EndOfStream:
    """Watches the bytes sent to a client for the stream's last event (rule 7).

    ``announced``: the client has (or is about to get) a ``data: [DONE]`` line; ``complete``: also the
    blank line that ends the event. A line starts after a newline, and a ``[DONE]`` inside a JSON string
    never does (JSON escapes newlines), so generated text cannot end a stream early.
    """

    __slots__ = ("_tail", "announced", "complete")

    def __init__(self) -> None:
        self._tail = b"\n"  # the stream's start is a line start
        self.announced = False
        self.complete = False

    def sees(self, segment: bytes) -> bool:
        """Take ``segment``, about to be sent; True once the ``[DONE]`` line is announced."""
        window = self._tail + segment
        if b"[DONE]" in window and not self.complete:
            self.announced = self.announced or _DONE_LINE.search(window) is not None
            self.complete = self.announced and _DONE_EVENT.search(window) is not None
        self._tail = window[-24:]
        return self.announced


class _Retry(Exception):
    """An attempt failed before its first byte; the call may go to another engine."""

    def __init__(self, kind: str, error: ApiError) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error


class Forwarder:
    """The per-app call path (see the module doc)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        pool: BackendPool,
        store: ProgramStore,
        router: RoutingPolicy,
        metrics: ProxyMetrics,
        settings: ForwardSettings,
        replica_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.pool = pool
        self.store = store
        self.router = router
        self.metrics = metrics
        self.settings = settings
        self.starts_ahead = settings.starts_ahead
        self.replica_id = replica_id
        self.rng = rng or random.Random(0)
        self.loads: dict[str, int] = {}
        self.mirror = ProgramMirror()
        self._outages = 0  # the store's outages the mirror has been cleared for (mirror rule 5)
        self._seq = itertools.count()
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self.background: set[asyncio.Task[None]] = set()

    def refresh_loads(self, loads: Mapping[str, int], export: bool = False) -> None:
        """This replica's view of the fleet's loads; ``export`` also sets the gauges (periodically)."""
        self.loads = dict(loads)
        if export:
            for engine in self.pool.by_id:
                self.metrics.child(self.metrics.engine_load, engine).set(self.loads.get(engine, 0))

    async def handle(self, request: web.Request, kind: Kind, path: str) -> web.StreamResponse:
        started = time.perf_counter()
        raw = await request.read()
        body = parse_call_body(kind, raw)
        if body.upstream is not None:  # the client's own priority removed (body.py rule 6)
            raw = body.upstream
        try:
            identity = extract_identity(request.headers, body.metadata)
        except IdentityError as exc:
            raise bad_request(str(exc), param=exc.param, code="invalid_header") from None
        serving = self.pool.serving(body.model)
        if serving is None:
            raise ApiError(
                404, f"The model `{body.model}` does not exist.", code="model_not_found", param="model"
            )
        call_id = f"{self.replica_id}-{next(self._seq)}"
        one_shot = identity.program_id is None
        program_id = identity.program_id or f"call-{call_id}"
        if self._outages != self.store.outages:
            self._outages = self.store.outages
            self.mirror.clear()
        if one_shot:
            self.mirror.created(program_id, private=True)
        excluded: set[str] = set()
        last_error: ApiError | None = None
        retries = 0
        for attempt in itertools.count():
            views = [
                EngineView(
                    b.engine_id,
                    healthy=b.healthy and b.engine_id not in excluded,
                    outstanding=self.loads.get(b.engine_id, 0),
                )
                for b in serving
            ]
            route = RouteRequest(
                program_id=program_id,
                thread_id=identity.thread_id,
                input_tokens=body.input_tokens,
                prefix=body.prefix,
                pinned_engine=self.mirror.pin(program_id),
                now=time.time(),
            )
            try:
                decision = self.router.route(route, views)
            except NoEngineAvailable as exc:
                if one_shot:
                    await self._end(program_id)
                raise last_error or ApiError(503, f"No backend available: {exc}", code="no_backend") from None
            # count the call in this replica's view at once, so that calls arriving together spread out
            # before their starts return with the fleet's view
            self.loads[decision.engine_id] = self.loads.get(decision.engine_id, 0) + 1
            call = f"{call_id}.{attempt}" if attempt else call_id
            start = CallStart(
                program_id, call, decision.engine_id, identity.thread_id, body.input_tokens, decision.pin
            )
            result = self._start_ahead(start) if self.starts_ahead and self.store.can_start_ahead else None
            if result is None:
                result = await self._start_and_wait(start, one_shot, started)
            engine = result.engine_id
            redirected = engine != decision.engine_id
            reason = "pin_redirect" if redirected else self.metrics.reason(decision.reason)
            self.metrics.child(self.metrics.routing, engine, reason).inc()
            backend = self.pool.by_id.get(engine)
            if backend is None or engine in excluded or not backend.healthy or backend not in serving:
                # the program's pin names an engine this call cannot use: give the attempt back
                await self._finish(
                    _Call(program_id, call, False, started), None, 0.0, 0.0, ok=False, end=False
                )
                excluded.add(engine)
                continue
            attempt_call = _Call(program_id, call, one_shot, started, result.service_atlas)
            try:
                return await self._exchange(
                    request, path, backend, body, raw, identity.thread_id, result, attempt_call
                )
            except _Retry as failure:
                last_error = failure.error
                self.metrics.upstream_errors.labels(engine, failure.kind).inc()
                excluded.add(engine)
                if retries >= self.settings.retries:
                    if one_shot:
                        await self._end(program_id)
                    raise failure.error from None
                retries += 1
                self.metrics.retries.labels(engine).inc()
                delay = self.settings.backoff * (2 ** (retries - 1)) * (0.5 + self.rng.random())
                if delay > 0:
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _end(self, program_id: str) -> None:
        """Rule 8 for a one-call program whose call could not be served."""
        self.mirror.forget(program_id)
        await self.store.end(program_id, time.time())

    def _start_ahead(self, start: CallStart) -> CallStartResult | None:
        """Rule 2: the start written without waiting and the mirrored context, when the mirror is
        exact for the program (programs/mirror.py rule 3); None: wait for the table instead."""
        mirror = self.mirror
        if not mirror.can_go_ahead(start.program_id, start.engine_id, start.pin):
            return None
        had_pin = mirror.pin(start.program_id) is not None
        ticket = mirror.start(start.program_id, start.engine_id, start.pin, ahead=True)

        def replied(result: CallStartResult | None) -> None:
            self._ahead_replied(start.program_id, result, ticket)

        if not self.store.start_ahead(start, time.time(), replied):
            mirror.start_failed(start.program_id)  # counted a start that was never written
            return None
        expected = ticket.expected
        assert expected is not None  # can_go_ahead: the entry is exact
        return CallStartResult(
            program_id=start.program_id,
            call_id=start.call_id,
            engine_id=expected.engine_id,
            pin_created=start.pin and not had_pin,
            pinned_engine=expected.pinned_engine,
            service_plas=expected.service_plas,
            service_atlas=expected.service_atlas,
            program_wait=expected.program_wait,
            prior_calls=expected.prior_calls,
            completed_calls=expected.completed_calls,
            duplicate=False,
            engine_loads=self.loads,
        )

    def _ahead_replied(self, program_id: str, result: CallStartResult | None, ticket: StartTicket) -> None:
        """Rule 2: Redis's answer to a start that went ahead; a difference is counted (mirror rule 4)."""
        if result is None:
            self.metrics.child(self.metrics.starts_ahead, "failed").inc()
            self.mirror.start_failed(program_id)
            return
        self.refresh_loads(result.engine_loads)
        if self.mirror.replied(ticket, result):
            self.metrics.child(self.metrics.starts_ahead, "differed").inc()
            expected = ticket.expected  # debug: without session affinity this is once per program
            log.debug(
                "program %s: call %s went ahead with a context Redis did not confirm (another replica "
                "serves the program too); its later calls wait for the table (sent: service %s, calls "
                "%s started / %s done; Redis: %s, %d / %d)", result.program_id, result.call_id,
                expected and expected.service_plas, expected and expected.prior_calls,
                expected and expected.completed_calls, result.service_plas, result.prior_calls,
                result.completed_calls,
            )  # fmt: skip
        else:
            self.metrics.child(self.metrics.starts_ahead, "confirmed").inc()

    async def _start_and_wait(self, start: CallStart, one_shot: bool, started: float) -> CallStartResult:
        """The start recorded by the table before the call goes on (rule 6 for a client that leaves)."""
        if self.store.redis is None:  # the memory table: nothing ever goes ahead, only pins matter
            result = await self.store.start_call(start, time.time())
            self.refresh_loads(result.engine_loads)
            self.mirror.pinned(start.program_id, result.pinned_engine)
            return result
        ticket = self.mirror.start(start.program_id, start.engine_id, start.pin, ahead=False)
        try:
            if self.store.ordered:
                try:
                    result = await self.store.start_call(start, time.time())
                except asyncio.CancelledError:  # the client left while the table recorded the start:
                    # a failed finish, ordered behind the start, gives the call back (rule 6)
                    given_back = _Call(start.program_id, start.call_id, one_shot, started)
                    self._finish_now(given_back, None, 0.0, 0.0, ok=False, end=one_shot)
                    raise
            else:
                starting = asyncio.ensure_future(self.store.start_call(start, time.time()))
                try:
                    result = await asyncio.shield(starting)
                except asyncio.CancelledError:  # the client left while the table was recording the start
                    given_back = _Call(start.program_id, start.call_id, one_shot, started)
                    self._in_background(self._give_back(starting, given_back))
                    raise
        except BaseException:
            self.mirror.start_failed(start.program_id)
            raise
        self.refresh_loads(result.engine_loads)
        if self.store.mode == "degraded":  # the local table answered: Redis may hold something else
            self.mirror.start_failed(start.program_id)
        else:
            self.mirror.replied(ticket, result)
        return result

    async def _exchange(
        self,
        request: web.Request,
        path: str,
        backend: Backend,
        body: CallBody,
        raw: bytes,
        thread_id: str | None,
        result: CallStartResult,
        call: _Call,
    ) -> web.StreamResponse:
        context = CallContext(
            program_id=result.program_id,
            call_id=call.call_id,
            thread_id=thread_id,
            program_service=result.service_plas,
            program_critical_path=result.service_atlas,
            program_wait=result.program_wait,
            arrival=time.time(),
            input_tokens=body.input_tokens,
        )
        headers = upstream_headers(request.headers.items(), context)
        engine = backend.engine_id
        backend.in_flight += 1
        self.metrics.child(self.metrics.in_flight, engine).inc()
        call.sent = time.perf_counter()
        reply: aiohttp.ClientResponse | None = None
        try:
            try:
                reply = await self.session.post(
                    backend.url + path, data=raw, headers=headers, timeout=self._timeout
                )
            except _CONNECT_ERRORS as exc:
                if _backend_unreachable(exc):
                    self.pool.record_call_failure(engine, f"{type(exc).__name__}: {exc}")
                await self._finish(call, None, 0.0, 0.0, ok=False, end=False)
                error = ApiError(502, f"Upstream {engine} unreachable: {exc}", code="upstream_unavailable")
                raise _Retry("connect", error) from None
            except TimeoutError as exc:
                if _backend_unreachable(exc):
                    self.pool.record_call_failure(
                        engine, f"connect timeout ({self.settings.connect_timeout} s)"
                    )
                await self._finish(call, None, 0.0, 0.0, ok=False, end=False)
                raise _Retry(
                    "timeout", ApiError(504, f"Upstream {engine} timed out", code="upstream_timeout")
                ) from None
            if reply.status in _RETRY_STATUSES:
                data = await reply.read()
                await self._finish(call, None, 0.0, 0.0, ok=False, end=False)
                raise _Retry(f"status_{reply.status}", _passthrough_error(reply.status, data))
            if reply.status in (401, 403) and self.settings.owns_upstream_credential:
                await reply.read()
                await self._finish(call, None, 0.0, 0.0, ok=False, end=call.one_shot)
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
                response = await self._stream(request, reply, engine, call)
            else:
                response = await self._complete(reply, engine, call)
            self.metrics.child(self.metrics.added_latency, "true" if body.stream else "false").observe(
                max(0.0, (time.perf_counter() - call.started) - (call.upstream_end - call.sent))
            )
            return response
        except BaseException:  # the client left (cancelled, or reset while we wrote), or the unforeseen
            if not call.finished:
                elapsed = time.perf_counter() - call.sent
                self._in_background(self._finish(call, None, 0.0, elapsed, ok=False, end=call.one_shot))
            raise
        finally:
            if reply is not None and not call.draining:
                reply.close()
            backend.in_flight -= 1
            self.metrics.child(self.metrics.in_flight, engine).dec()

    async def _complete(self, reply: aiohttp.ClientResponse, engine: str, call: _Call) -> web.Response:
        try:
            data = await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.metrics.upstream_errors.labels(engine, "midstream").inc()
            await self._finish(call, None, 0.0, time.perf_counter() - call.sent, ok=False, end=call.one_shot)
            raise ApiError(502, f"Upstream {engine} failed mid-reply: {exc}", code="upstream_error") from None
        call.upstream_end = time.perf_counter()
        report = self._report(reply.headers.get(REPORT_HEADER))
        exec_time = call.upstream_end - call.sent
        await self._finish(call, report, 0.0, exec_time, ok=reply.status < 400, end=call.one_shot)
        return web.Response(status=reply.status, body=data, headers=client_headers(reply.headers.items()))

    async def _stream(
        self, request: web.Request, reply: aiohttp.ClientResponse, engine: str, call: _Call
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=client_headers(reply.headers.items()))
        await response.prepare(request)
        stripper = ReportStripper()
        ending = _EndOfStream()
        first: float | None = None
        ok = reply.status < 400

        async def finish_measured() -> None:
            self.metrics.child(self.metrics.reports, "measured").inc()
            end = time.perf_counter()
            begin = first or end
            await self._finish(call, None, begin - call.sent, end - begin, ok, call.one_shot)

        async def send(data: bytes) -> None:
            try:
                await response.write(data)
            except ConnectionResetError:
                if not ending.announced:  # the client left mid-stream: end as its cancellation would (rule 6)
                    raise asyncio.CancelledError from None

        async def emit(segments: list[bytes | ReportLine]) -> None:
            for segment in segments:
                if isinstance(segment, ReportLine):
                    if not call.finished:
                        report = self._report(segment.payload)
                        end = time.perf_counter()
                        begin = first or end
                        await self._finish(call, report, begin - call.sent, end - begin, ok, call.one_shot)
                    continue
                if ending.sees(segment) and not call.finished:
                    await finish_measured()  # a bare engine: the table before the client's [DONE] (rule 5)
                await send(segment)

        failure: Exception | None = None
        while not ending.complete:
            try:  # only the upstream's errors are caught here; the client's (while writing) propagate
                chunk = await reply.content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = exc
                break
            if not chunk:
                break
            if first is None:
                first = time.perf_counter()
                self.metrics.ttft.observe(first - call.started)
            await emit(stripper.feed(chunk))
        if not ending.complete:
            await emit(stripper.close())
        call.upstream_end = time.perf_counter()
        if failure is not None and not ending.announced:
            ok = False
            self.metrics.child(self.metrics.upstream_errors, engine, "midstream").inc()
            if not call.finished:
                await finish_measured()
            message = f"Upstream {engine} failed mid-stream: {failure}"
            error = {
                "error": {
                    "message": message,
                    "type": "upstream_error",
                    "param": None,
                    "code": "upstream_error",
                }
            }
            await send(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
        elif failure is not None:
            log.debug("upstream %s failed after [DONE] (ignored): %s", engine, failure)
        elif not call.finished:
            await finish_measured()
        if ending.complete and not reply.content.at_eof():
            call.draining = True
            self._in_background(self._drain(reply))
        # A client that closed right after the end makes this write fail; aiohttp ignores it too.
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _drain(self, reply: aiohttp.ClientResponse) -> None:
        """Read what the upstream sends after ``[DONE]`` (rule 7), so its connection can be reused."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while await reply.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass
        finally:
            reply.close()

    def _report(self, raw: str | bytes | None) -> CompletionReport | None:
        if raw is None:
            self.metrics.child(self.metrics.reports, "measured").inc()
            return None
        try:
            report = decode_report(raw)
        except ProtocolError as exc:
            log.warning("ignoring a malformed completion report: %s", exc)
            self.metrics.child(self.metrics.reports, "invalid").inc()
            return None
        self.metrics.child(self.metrics.reports, "sidecar").inc()
        return report

    async def _finish(
        self,
        call: _Call,
        report: CompletionReport | None,
        wait: float,
        exec_time: float,
        ok: bool,
        end: bool,
    ) -> None:
        """Rule 5: the finish recorded (memory) or sent ahead of this replica's later table operations
        (Redis) before this returns; only an unordered table (Redis Cluster) is waited for."""
        done = self._finish_now(call, report, wait, exec_time, ok, end)
        if self.store.ordered:
            return
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:  # the client left while Redis recorded the finish (rule 6)
            self._in_background(_settle(done))
            raise

    def _finish_now(
        self,
        call: _Call,
        report: CompletionReport | None,
        wait: float,
        exec_time: float,
        ok: bool,
        end: bool,
    ) -> asyncio.Future[Ended | None]:
        call.finished = True
        if report is not None:
            finish = CallFinish(
                call.program_id,
                call.call_id,
                exec_time=report.exec_time,
                queue_wait=report.queue_wait,
                prompt_tokens=report.prompt_tokens,
                cached_tokens=report.cached_tokens,
                output_tokens=report.output_tokens,
                ok=report.ok and ok,
            )
        else:
            finish = CallFinish(call.program_id, call.call_id, exec_time=exec_time, queue_wait=wait, ok=ok)
        self.metrics.call_exec.observe(max(0.0, finish.exec_time))
        self.metrics.call_wait.observe(max(0.0, finish.queue_wait))
        self.mirror.finished(finish, call.atlas_at_arrival)
        done = self.store.finish_soon(finish, time.time(), end_program=end)
        if end:
            self.mirror.forget(call.program_id)
            done.add_done_callback(self._observe_end)
        return done

    def _observe_end(self, done: asyncio.Future[Ended | None]) -> None:
        ended = None if done.cancelled() or done.exception() is not None else done.result()
        if ended is not None:
            self.metrics.program_service.observe(ended[0])
            self.metrics.program_wait.observe(ended[1])

    async def _give_back(self, starting: asyncio.Future[CallStartResult], call: _Call) -> None:
        with contextlib.suppress(Exception):
            await starting
            await self._finish(call, None, 0.0, 0.0, ok=False, end=call.one_shot)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _backend_unreachable(exc: BaseException) -> bool:
    """A connect failure that speaks about the backend (refused, unreachable, connect timeout)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno not in _LOCAL_ERRNOS
    return False


async def _settle(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(Exception):
        await task


def _passthrough_error(status: int, data: bytes) -> ApiError:
    """A backend's 502/503 after the last retry: its own message when it sent OpenAI-style JSON."""
    message = f"Upstream answered {status}"
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(data)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = str(parsed["error"].get("message") or message)
    return ApiError(status, message, code="upstream_unavailable")
