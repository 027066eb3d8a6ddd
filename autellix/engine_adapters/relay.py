"""Forwarding an admitted call to the engine and its answer to the client (the IO half of the sidecar).

1. The body goes out as the client sent it (the raw bytes) unless the adapter must change it:
   ``priority`` from the call's queue level when the engine runs a priority policy, and
   ``stream_options.include_usage`` for streams, so we can count tokens.
2. Non-streamed answers and engine errors (any status) pass through with their status and body (but
   on the Messages routes an engine error in OpenAI's shape, which is how vLLM words its validation
   errors there, is re-worded in Anthropic's, the route's shape); the completion report rides in the
   ``X-Autellix-Report`` header, which only the proxy reads.
3. Streams are relayed event by event as they arrive (sse.py), the report written as an SSE comment
   just before ``data: [DONE]`` (or at the end of a stream that broke off), a usage chunk that only we
   asked for removed.
4. Whatever ends the call early (the client goes away, which cancels the handler or fails a write; the
   engine breaks off), the engine response is *closed*, not released: closing the connection is how
   vLLM, SGLang and the simulated engine learn to abort the request. A fully read response is
   released, so its connection is reused.
5. The call's deadline (event-loop time; autellix/deadlines.py) bounds the engine's answer: passed
   before its head or while a whole answer is read, a 504; mid-stream, the stream is cut like one the
   engine broke off. A stream cut either way ends with the API's error event (the proxy's words for
   it, autellix/proxy/apis), so a client that talks to the sidecar directly knows it is incomplete.
6. Abort-and-resume (``autellix sidecar --preempt``; scheduler.py rule 5, gate.py rule 3, resume.py).
   A call the sidecar entered resumable goes out with ``return_token_ids`` and its stream through a
   :class:`~.resume.ResumeSession`, which records the prompt's and the generated token ids and hides
   them from the client. The stream runs in *spells*: when the scheduler stops the call (its stop
   event), nothing more of the engine's stream is forwarded, its connection is closed (the engine
   aborts the request, keeping its full blocks in the prefix cache), and the handler waits for the
   call's next admission (the deadline still applies); it then sends the session's resumed request
   (``/v1/completions`` with the token ids so far as the prompt, the priority of the new admission)
   and relays that stream, translated into the first spell's chunks, into the same client response.
   The client sees one stream; the report counts the call once, with the call's usage, its waits
   summed (``queue_wait``) and only its time in the engine as ``exec_time``. A stop that arrives when
   the call can no longer be resumed faithfully (its last content chunk was forwarded) is ignored:
   the stream runs to its end. An engine that refuses the resumed request ends the stream as one
   that broke off (rule 5's error event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from autellix.api_errors import (
    ApiError,
    ErrorShape,
    anthropic_body,
    error_message,
    error_shape_of,
    is_anthropic_error,
)
from autellix.engine_adapters.accounting import Usage, compute_report
from autellix.engine_adapters.apis import BY_PATH, ApiRules
from autellix.engine_adapters.base import EngineAdapter
from autellix.engine_adapters.gate import AdmissionGate
from autellix.engine_adapters.metrics import SidecarMetrics
from autellix.engine_adapters.protocol import HEADER_PREFIX, REPORT_HEADER, CompletionReport
from autellix.engine_adapters.resume import ResumeSession
from autellix.engine_adapters.scheduling import Admission
from autellix.engine_adapters.sse import SseRelay
from autellix.engine_adapters.upstream import EngineClient, EngineUnavailable, forward_headers


class Sidecar(Protocol):
    """What the relay uses of the sidecar (sidecar.py's ``Sidecar`` is one): the relay depends on this,
    not on the module that calls it, so the two import one way."""

    adapter: EngineAdapter
    client: EngineClient
    gate: AdmissionGate
    metrics: SidecarMetrics

    def engine_priority(self, level: int) -> int | None: ...


DRAIN_SECONDS = 2.0  # an engine that keeps a stream open after [DONE] loses the connection, not the call
YIELD_EVERY = 8  # engine chunks a resumable stream relays before it lets the event loop run (rule 6)
REFUSAL_BYTES = 300  # of an engine's answer to a resumed call that it did not stream, in the error event

_RESPONSE_DROPPED = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)


class SidecarError(ApiError):
    """An error answered in vLLM's words: ``{"error": {"message", "type", "param", "code"}}`` with
    ``type`` such as ``BadRequestError`` and the status as ``code`` (or in Anthropic's shape on the
    Messages routes, autellix/api_errors.py)."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        error_type: str = "BadRequestError",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, code=status, param=param, headers=headers, error_type=error_type)


def error_response(error: ApiError, shape: ErrorShape = "openai") -> web.Response:
    return web.json_response(error.body(shape), status=error.status, headers=error.headers)


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The engine's response headers a client may see (framing is aiohttp's own; none of ours)."""
    prefix = HEADER_PREFIX.lower()
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in _RESPONSE_DROPPED and not name.lower().startswith(prefix)
    }


def _observe(sidecar: Sidecar, report: CompletionReport, outcome: str) -> None:
    metrics = sidecar.metrics
    metrics.requests.labels(outcome).inc()
    if report.ok:
        metrics.call_wait.observe(report.queue_wait)
        metrics.call_exec.observe(report.exec_time)


async def forward_call(
    sidecar: Sidecar,
    request: web.Request,
    path: str,
    raw: bytes,
    body: dict[str, Any],
    call_id: str,
    admission: Admission,
    deadline: float | None = None,
    resume_id: str | None = None,
) -> tuple[web.StreamResponse, bool, CompletionReport | None]:
    """Send an admitted call to the engine; returns the client's response, whether the call ended
    normally (False: the engine was unreachable or broke off; the gate then counts an abort) and the
    completion report (None when the client went away first). ``resume_id``: the call was entered
    resumable under that gate id (rule 6)."""
    rules = BY_PATH[path]
    stream = body.get("stream") is True
    options = body.get("stream_options")
    client_wants_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    priority = sidecar.engine_priority(admission.level) if rules.sends_priority else None
    session = ResumeSession(rules.name, path, body) if resume_id is not None and stream else None
    rewritten = sidecar.adapter.rewrite_body(
        body if session is None else session.first_body(),
        priority=priority,
        want_usage=stream and rules.stream_usage_option,
    )
    if session is not None and rewritten is None:
        rewritten = session.first_body()
    data = raw if rewritten is None else json.dumps(rewritten, separators=(",", ":")).encode()
    headers = forward_headers(request.headers)
    headers["Content-Type"] = "application/json"
    gate = sidecar.gate
    admitted_at = gate.now()

    def report_for(
        *, waited: float = admission.waited, paused: float = 0.0, **outcome: Any
    ) -> CompletionReport:
        # the working set as it stands when the call ends, for the proxy's residency router; a resumed
        # call's time stopped (rule 6) is wait, not execution
        return compute_report(
            call_id,
            our_queue_wait=waited,
            admitted_at=admitted_at + paused,
            resident=gate.resident_fraction(),
            **outcome,
        )

    try:
        async with asyncio.timeout_at(deadline):
            upstream = await sidecar.client.request("POST", path, data, headers)
    except TimeoutError:  # rule 5
        report = report_for(completed_at=gate.now(), usage=None, ok=False)
        _observe(sidecar, report, "deadline")
        error = SidecarError(
            "The call's deadline passed before the engine answered",
            status=504,
            error_type="TimeoutError",
            headers={REPORT_HEADER: report.to_json()},
        )
        return error_response(error, rules.error_shape), False, report
    except EngineUnavailable as exc:
        report = report_for(completed_at=gate.now(), usage=None, ok=False)
        _observe(sidecar, report, "engine_unavailable")
        error = SidecarError(
            str(exc),
            status=503,
            error_type="ServiceUnavailableError",
            headers={REPORT_HEADER: report.to_json()},
        )
        return error_response(error, rules.error_shape), False, report
    reusable = False
    try:
        if stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
            if session is not None and resume_id is not None:
                response, completed, reusable, report = await _relay_resumable(
                    sidecar, request, upstream, client_wants_usage, report_for, rules, deadline,
                    session, resume_id, headers, admission.waited,
                )  # fmt: skip
            else:
                response, completed, reusable, report = await _relay_stream(
                    sidecar, request, upstream, client_wants_usage, report_for, rules, deadline
                )
        else:
            if resume_id is not None:  # an error answer, not a stream: nothing to stop and resume
                gate.no_longer_resumable(resume_id)
            response, completed, report = await _relay_whole(sidecar, upstream, report_for, rules, deadline)
            reusable = completed
        return response, completed, report
    finally:
        if reusable:
            upstream.release()
        else:
            upstream.close()


async def _relay_whole(
    sidecar: Sidecar,
    upstream: aiohttp.ClientResponse,
    report_for: Callable[..., CompletionReport],
    rules: ApiRules,
    deadline: float | None,
) -> tuple[web.StreamResponse, bool, CompletionReport]:
    gate = sidecar.gate
    try:
        async with asyncio.timeout_at(deadline):
            payload = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        report = report_for(completed_at=gate.now(), usage=None, ok=False)
        late = isinstance(exc, TimeoutError) and _passed(deadline)
        _observe(sidecar, report, "deadline" if late else "engine_broke_off")
        error = SidecarError(
            "The call's deadline passed while the engine answered"
            if late
            else f"the engine broke off its answer: {exc!r}",
            status=504 if late else 502,
            error_type="TimeoutError" if late else "BadGatewayError",
            headers={REPORT_HEADER: report.to_json()},
        )
        return error_response(error, rules.error_shape), False, report
    completed_at = gate.now()
    ok = upstream.status < 400
    usage: Usage | None = None
    if ok:
        try:
            decoded = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            decoded = None
        shaped = rules.whole_usage(decoded) if isinstance(decoded, dict) else None
        if shaped is not None:
            usage = sidecar.adapter.read_usage(shaped)
    elif rules.error_shape == "anthropic":
        payload = _anthropic_error(upstream.status, payload)
    report = report_for(completed_at=completed_at, usage=usage, ok=ok)
    _observe(sidecar, report, "ok" if ok else "engine_error")
    headers = response_headers(upstream.headers)
    headers[REPORT_HEADER] = report.to_json()
    return web.Response(body=payload, status=upstream.status, headers=headers), True, report


async def _relay_stream(
    sidecar: Sidecar,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    client_wants_usage: bool,
    report_for: Callable[..., CompletionReport],
    rules: ApiRules,
    deadline: float | None,
) -> tuple[web.StreamResponse, bool, bool, CompletionReport]:
    """Relay an SSE stream; returns the response, whether the call ended normally, whether the
    engine connection may be reused (it reached its end), and the report."""
    relay = SseRelay(client_wants_usage, sidecar.adapter.read_usage, rules.dialect)
    response = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers))
    await response.prepare(request)
    broke_off: BaseException | None = None
    chunks = upstream.content.iter_any().__aiter__()
    while not relay.done:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except (aiohttp.ClientError, TimeoutError) as exc:
            broke_off = exc
            break
        forward = relay.feed(chunk)
        if forward:
            await response.write(forward)  # the client gone: ConnectionResetError ends the call upstream
    # The report is taken at [DONE] itself (or where the stream broke off), and the client let go at once.
    report = report_for(
        completed_at=sidecar.gate.now(),
        usage=relay.usage,
        ok=broke_off is None and not relay.error_seen,
        fallback_output_tokens=relay.content_events,
    )
    await _end_stream(sidecar, response, relay, report, rules, deadline, broke_off)
    reusable = broke_off is None and await _drained(upstream)
    return response, broke_off is None, reusable, report


async def _end_stream(
    sidecar: Sidecar,
    response: web.StreamResponse,
    relay: SseRelay,
    report: CompletionReport,
    rules: ApiRules,
    deadline: float | None,
    broke_off: BaseException | None,
) -> None:
    """Count the outcome, then write the stream's end: the held tail, the report, the last event."""
    late = isinstance(broke_off, TimeoutError) and _passed(deadline)
    outcome = "deadline" if late else "engine_broke_off"
    _observe(sidecar, report, "ok" if report.ok else "engine_error" if broke_off is None else outcome)
    if late:
        sidecar.metrics.rejected.labels("deadline_midstream").inc()
    ending = relay.finish(report.sse_line())
    if broke_off is not None:  # rule 5: the API's error event, then the report
        if late:
            why = "the call's deadline passed"
        elif isinstance(broke_off, ResumeRefused):
            why = str(broke_off)
        else:
            why = f"the engine broke off: {broke_off!r}"
        ending = _STREAM_ERRORS[rules.path](f"Stream cut: {why}") + ending
    await response.write(ending)
    await response.write_eof()


class ResumeRefused(Exception):
    """The engine did not answer a resumed call with a stream (rule 6)."""


class _Stopped:
    """How a spell of a resumable call ends when the scheduler stopped the call (rule 6)."""


_STOPPED = _Stopped()


async def _relay_resumable(
    sidecar: Sidecar,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    client_wants_usage: bool,
    report_for: Callable[..., CompletionReport],
    rules: ApiRules,
    deadline: float | None,
    session: ResumeSession,
    gate_id: str,
    headers: dict[str, str],
    waited: float,
) -> tuple[web.StreamResponse, bool, bool, CompletionReport]:
    """Rule 6: relay a resumable call's stream over as many spells as the scheduler makes it take.
    Returns as :func:`_relay_stream` does; ``upstream`` (the first spell's) is the caller's to close,
    every later response is closed here."""
    gate = sidecar.gate
    stop = gate.stop_event(gate_id)
    assert stop is not None, "a resumable call has a stop event from enter to leave"
    relay = SseRelay(client_wants_usage, sidecar.adapter.read_usage, rules.dialect, session.rewrite)
    response = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers))
    await response.prepare(request)
    current = upstream
    timing = {"paused": 0.0, "waited": waited}  # summed over the spells, for the report
    broke_off: BaseException | None = None
    try:
        while True:
            ended = await _spell(gate, gate_id, current, relay, session, stop, response, deadline)
            if not isinstance(ended, _Stopped):
                broke_off = ended
                break
            resumed = gate.resumed(gate_id)
            assert resumed is not None, "a stopped call waits for its next admission"
            stop.clear()  # noticed: a later stop sets it again
            current.close()  # the engine aborts the request; its full blocks stay in the prefix cache
            relay.drop_partial()
            stopped_at = gate.now()
            try:
                async with asyncio.timeout_at(deadline):
                    admission = await resumed
            except TimeoutError as exc:
                broke_off = exc
            stopped = gate.now() - stopped_at
            timing["paused"] += stopped
            if broke_off is not None:
                timing["waited"] += stopped  # the scheduler's count stops with the call, not admitted
                break
            timing["waited"] = admission.waited
            path, body = session.resume_request()
            priority = sidecar.engine_priority(admission.level)
            body = sidecar.adapter.rewrite_body(body, priority=priority, want_usage=True) or body
            data = json.dumps(body, separators=(",", ":")).encode()
            try:
                async with asyncio.timeout_at(deadline):
                    current = await sidecar.client.request("POST", path, data, headers)
            except (TimeoutError, EngineUnavailable) as exc:
                broke_off = exc
                break
            sidecar.metrics.resumes.inc()
            if current.status != 200 or current.content_type != "text/event-stream":
                broke_off = ResumeRefused(await _refusal(current))
                break
            session.resumed()
        report = report_for(
            completed_at=gate.now(),
            usage=relay.usage,
            ok=broke_off is None and not relay.error_seen,
            fallback_output_tokens=len(session.generated) or relay.content_events,
            **timing,
        )
        await _end_stream(sidecar, response, relay, report, rules, deadline, broke_off)
        reusable = broke_off is None and await _drained(current)
        if current is not upstream and reusable:
            current.release()
        return response, broke_off is None, reusable and current is upstream, report
    finally:
        if current is not upstream:
            current.close()


async def _refusal(upstream: aiohttp.ClientResponse) -> str:
    """Why the engine did not stream a resumed call: its status and the start of its answer."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            said = (await upstream.content.read(REFUSAL_BYTES)).decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError):
        said = ""
    return f"the engine answered the resumed call with {upstream.status}: {said}".rstrip(": ")


async def _spell(
    gate: AdmissionGate,
    gate_id: str,
    upstream: aiohttp.ClientResponse,
    relay: SseRelay,
    session: ResumeSession,
    stop: asyncio.Event,
    response: web.StreamResponse,
    deadline: float | None,
) -> BaseException | _Stopped | None:
    """One engine stream of a resumable call, relayed until it ends (None), breaks off (the error) or
    the scheduler stops the call; what arrives after a stop is not forwarded (it is asked for again)."""
    watcher = asyncio.create_task(_close_when_stopped(stop, upstream, session))
    chunks = upstream.content.iter_any().__aiter__()
    resumable = session.can_resume
    turns = 0
    try:
        while not relay.done:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _STOPPED if stop.is_set() and session.can_resume else exc
            if stop.is_set() and session.can_resume:
                return _STOPPED
            generated = len(session.generated)
            forward = relay.feed(chunk)
            if len(session.generated) != generated:
                gate.progress(gate_id, len(session.generated))
            if resumable and not session.can_resume:
                resumable = False
                gate.no_longer_resumable(gate_id)
            if forward:
                await response.write(forward)
            # Neither a read of buffered bytes nor a write below the high-water mark suspends: an
            # engine that streams faster than this loop would starve the timers (the tick that
            # decides a stop) and every other handler until the stream ends.
            turns += 1
            if turns % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return _STOPPED if stop.is_set() and session.can_resume and not relay.done else None
    finally:
        watcher.cancel()


async def _close_when_stopped(
    stop: asyncio.Event, upstream: aiohttp.ClientResponse, session: ResumeSession
) -> None:
    """Close the engine stream the moment the call is stopped (a read in progress then fails)."""
    await stop.wait()
    while not stop.is_set():  # a stop the same decision took back (gate.py rule 3): wait for a real one
        await stop.wait()
    if session.can_resume:
        upstream.close()


def _anthropic_error(status: int, payload: bytes) -> bytes:
    """Rule 2: an engine's OpenAI-shaped error on a Messages route, in Anthropic's shape."""
    try:
        decoded = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return payload
    message = error_message(decoded)
    if message is None or is_anthropic_error(decoded):
        return payload
    return json.dumps(anthropic_body(status, message)).encode()


def _passed(deadline: float | None) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline


def _stream_errors() -> dict[str, Callable[[str], bytes]]:
    from autellix.proxy.apis import APIS  # the same words as the proxy's, for every API

    return {api.path: api.stream_error for api in APIS}


_STREAM_ERRORS = _stream_errors()


async def _drained(upstream: aiohttp.ClientResponse) -> bool:
    """Read what the engine still sends after ``[DONE]`` (normally only the end of the chunked body)."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await upstream.content.readany():
                pass
    except (aiohttp.ClientError, TimeoutError):
        return False
    return True


async def passthrough(sidecar: Sidecar, request: web.Request) -> web.StreamResponse:
    """A request answered by the engine as it is, not queued (``/v1/models``, stored responses,
    ``/v1/messages/count_tokens``); a stream (``GET /v1/responses/{id}?stream=true``) is relayed."""
    raw = await request.read() if request.can_read_body else None
    try:
        upstream = await sidecar.client.request(
            request.method, request.path_qs, raw, headers=forward_headers(request.headers)
        )
    except EngineUnavailable as exc:
        raise SidecarError(str(exc), status=503, error_type="ServiceUnavailableError") from exc
    try:
        headers = response_headers(upstream.headers)
        if upstream.content_type == "text/event-stream":
            response = web.StreamResponse(status=upstream.status, headers=headers)
            await response.prepare(request)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            await response.write_eof()
            return response
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SidecarError(
                f"the engine broke off its answer: {exc!r}", status=502, error_type="BadGatewayError"
            ) from exc
        if upstream.status >= 400 and error_shape_of(request.path) == "anthropic":  # rule 2
            payload = _anthropic_error(upstream.status, payload)
        return web.Response(body=payload, status=upstream.status, headers=headers)
    finally:
        upstream.close()
