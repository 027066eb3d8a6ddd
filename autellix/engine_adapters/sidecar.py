"""``autellix sidecar``: the aiohttp shell in front of one engine (DESIGN.md §1, §3; reference.md §6).

Decisions live in the pure modules (scheduling/ orders calls, admission.py sizes the window, base.py
and the adapters map priorities and read load, accounting.py and sse.py build the report); this module
only moves bytes and time between them and the network.

A generation request (``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/responses`` or
``/v1/messages``; what differs between them is apis.py) goes through:

1. read and check: body size (413), JSON object (400), ``X-Autellix-*`` headers (400); a call without
   a program id is a program of its own;
2. queue: a :class:`QueuedCall` placed by the program's service (``plas``, ``mlfq``) or critical path
   (``atlas``), waited on until the gate admits it (relay.py then takes over);
   a call beyond ``--max-queued`` waiting calls is a 429 with ``Retry-After`` (never queued), and one
   whose deadline (``X-Request-Timeout``, capped by ``--max-call-seconds``; autellix/deadlines.py)
   passes while it waits is a 504 and leaves the queue; past admission the deadline cuts the engine
   request (relay.py rule 5);
3. leave: in a ``finally``, whatever happened (finished, engine error, client gone while queued or
   while streaming), so the queue, the in-flight count and the window never leak a call.
4. With ``--preempt`` (off by default; vllm and sim engines only) the gate runs abort-and-resume
   (scheduler.py rule 5): a call that resume.py rule 1 finds resumable (a streamed chat or completions
   call with ``max_tokens`` and nothing a resumed request would not reproduce) is entered
   ``resumable``; after a tick the scheduler may stop such a call for a much better waiting one, and
   the relay (relay.py rule 6) aborts it in the engine and, once the call is admitted again, resumes
   it from its prompt + generated token ids in the same client stream. Other calls are never stopped.

Two timers run beside the handlers: the load probe (the window adapts to the engine's running/waiting
counts; in ``auto`` mode it also asks the engine once whether it runs a priority policy) and the tick
(beta promotions, service accounting of running calls); with ``--api-key-file`` a third re-reads it.

API keys (autellix/auth.py): with ``--api-key`` every route but ``/health``, ``/ready`` and
``/metrics`` needs ``Authorization: Bearer <key>`` (401 in OpenAI's shape otherwise, before the call is
queued), and that header is then the sidecar's, never the engine's; ``--engine-api-key`` is put on
every request to the engine by :class:`EngineClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autellix.api_errors import error_shape_of, unauthorized
from autellix.auth import KeyRing, forwards_client_authorization, read_key_file, requires_key
from autellix.deadlines import DEADLINE_HEADER, DeadlineError, call_timeout, retry_after
from autellix.engine_adapters.accounting import estimate_input_tokens, requested_output_tokens
from autellix.engine_adapters.admission import AdmissionWindow
from autellix.engine_adapters.apis import BY_PATH
from autellix.engine_adapters.base import (
    AdapterOptions,
    EngineAdapter,
    LoadProbeError,
    PriorityDecision,
    PrioritySupport,
    get_adapter,
    resolve_priority,
)
from autellix.engine_adapters.config import SidecarSettings
from autellix.engine_adapters.gate import AdmissionGate, CallTokens, CallUsage
from autellix.engine_adapters.metrics import SidecarMetrics
from autellix.engine_adapters.protocol import CallContext, ProtocolError, decode_call_context
from autellix.engine_adapters.relay import SidecarError, error_response, forward_call, passthrough
from autellix.engine_adapters.resume import why_not_resumable
from autellix.engine_adapters.scheduling import QueuedCall, get_policy
from autellix.engine_adapters.scheduling.working_set import WorkingSetGate
from autellix.engine_adapters.upstream import EngineClient, EngineUnavailable
from autellix.jsonbody import JsonBodyError, parse_json
from autellix.serving import reload_keys, run_service, serve_app

log = logging.getLogger("autellix.sidecar")

KEY_FILE_RELOAD_SECONDS = 10.0
_GENERATION_PATHS = frozenset(BY_PATH)  # apis.py: chat, completions, Responses, Messages


class Sidecar:
    """Everything one sidecar owns: settings, adapter, gate, engine client, metrics, priority state."""

    def __init__(self, settings: SidecarSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.adapter: EngineAdapter = get_adapter(
            settings.engine_kind, AdapterOptions(settings.sglang_low_priority_values_first)
        )
        queue = get_policy(settings.scheduler, settings.scheduler_params)
        gate_params = settings.working_set_gate_params()
        self.gate = AdmissionGate(
            queue,
            AdmissionWindow(settings.window_params()),
            clock,
            working_set=WorkingSetGate(gate_params) if gate_params is not None else None,
            kv_capacity_tokens=settings.kv_capacity_tokens,
            kv_headroom=settings.kv_headroom,
            kv_budget=settings.kv_budget,
            preempt=settings.preempt_settings(),
        )
        self.client = EngineClient(settings.engine_url, settings.connect_timeout, settings.engine_api_key)
        from_file = read_key_file(settings.api_key_file) if settings.api_key_file is not None else ()
        self.key_ring = KeyRing.of(settings.api_key, from_file)
        self.forward_authorization = forwards_client_authorization(
            self.key_ring.keys.enabled, settings.engine_api_key
        )
        self.priority: PriorityDecision = resolve_priority(settings.engine_priority, self.adapter, None)
        self.metrics = SidecarMetrics(self.gate.stats, lambda: self.priority.enabled)
        self._detection_pending = (
            settings.engine_priority != "off" and self.adapter.server_info_path is not None
        )
        self._load_path = 0
        self._warned_probe = False
        self._next_key = 0

    def call_tokens(self, call: QueuedCall, body: dict[str, Any]) -> CallTokens:
        """What the call weighs in KV: its prompt and the output it may generate (max_tokens)."""
        requested = requested_output_tokens(body)
        if requested is None:
            reserve = self.settings.default_output_reserve
        else:
            reserve = min(requested, self.settings.max_output_reserve)
        return CallTokens(call.size, reserve)

    def queued_call(self, context: CallContext, body: dict[str, Any]) -> QueuedCall:
        """The queue record of a new call; its key is unique even if a proxy repeats a call id.

        PLAS is for single-threaded programs (the program's summed service), ATLAS for multi-threaded
        ones (the program's critical path): the scheduler setting picks which header value places it.
        """
        self._next_key += 1
        atlas = self.settings.scheduler == "atlas"
        return QueuedCall(
            call_id=f"{self._next_key}:{context.call_id}",
            program_id=context.program_id,
            thread_id=context.thread_id,
            arrival=self.gate.now(),
            program_service=context.program_critical_path if atlas else context.program_service,
            program_wait=context.program_wait,
            size=context.input_tokens or estimate_input_tokens(body),
        )

    def engine_priority(self, level: int) -> int | None:
        decision = self.priority
        if not decision.enabled:
            return None
        return self.adapter.engine_priority(level, self.gate.queue.num_levels, decision.low_values_first)

    async def probe_once(self) -> None:
        """One load probe (and, until it got an answer, the priority-policy detection)."""
        probe_timeout = self.settings.probe_timeout or max(1.0, 5 * self.settings.probe_interval)
        if self._detection_pending:
            await self._detect_priority(probe_timeout)
        path = self.adapter.load_paths[self._load_path]
        sent_at = self.gate.now()
        try:
            status, text = await self.client.get_text(path, probe_timeout)
        except (EngineUnavailable, TimeoutError, aiohttp.ClientError) as exc:
            self._probe_failed(f"engine load probe {path} failed: {exc}")
            return
        if status == 404 and self._load_path + 1 < len(self.adapter.load_paths):
            self._load_path += 1
            log.info("engine has no %s; probing %s instead", path, self.adapter.load_paths[self._load_path])
            return
        if status != 200:
            self._probe_failed(f"engine load probe {path} answered {status}")
            return
        try:
            load = self.adapter.parse_load(path, text)
        except LoadProbeError as exc:
            self._probe_failed(str(exc))
            return
        self._warned_probe = False
        if self.settings.kv_capacity_tokens is not None:
            load = replace(load, kv_capacity_tokens=self.settings.kv_capacity_tokens)
        change = self.gate.observe(load, sent_at)
        if change.action != "hold":
            log.debug("window %d -> %d (%s; engine %s)", change.before, change.after, change.reason, load)

    async def _detect_priority(self, timeout: float) -> None:
        path = self.adapter.server_info_path
        assert path is not None
        try:
            status, text = await self.client.get_text(path, timeout)
        except (EngineUnavailable, TimeoutError, aiohttp.ClientError):
            return  # the engine is not up yet: ask again at the next probe
        if status >= 500:
            return  # starting up or failing: only a real answer (or a 404) settles the question
        detected: PrioritySupport | None = self.adapter.detect_priority(status, text)
        self._detection_pending = False
        self.priority = resolve_priority(self.settings.engine_priority, self.adapter, detected)
        log.info(
            "engine priority field: %s (%s)",
            "sent" if self.priority.enabled else "not sent",
            self.priority.reason,
        )

    async def reload_key_file(self) -> None:
        """Re-read ``--api-key-file``; a file that cannot be used keeps the keys in force."""
        assert self.settings.api_key_file is not None
        await reload_keys(self.key_ring, self.settings.api_key_file, log)

    def _probe_failed(self, message: str) -> None:
        self.metrics.probe_failures.inc()
        if not self._warned_probe:
            log.warning("%s; the admission window holds until probes succeed", message)
            self._warned_probe = True


SIDECAR = web.AppKey("sidecar", Sidecar)


async def _every(seconds: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # a timer must survive anything, or admission would stall
            log.exception("%s failed", what)
        await asyncio.sleep(seconds)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    shape = error_shape_of(request.path)
    try:
        return await handler(request)
    except SidecarError as exc:
        return error_response(exc, shape)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(SidecarError(f"Request body is too large: {exc.text}", status=413), shape)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "NotFoundError" if exc.status == 404 else "BadRequestError"
        return error_response(SidecarError(exc.reason, status=exc.status, error_type=kind), shape)
    # the body's framing broke (chunked encoding, length) or its Content-Encoding does not decode
    except (BadHttpMessage, RequestPayloadError) as exc:
        return error_response(SidecarError(f"Malformed request body: {type(exc).__name__}."), shape)
    except ConnectionResetError:
        raise  # the client is gone: nobody to answer
    except Exception:  # a bug of ours: still answer in the API's error shape, and keep serving
        log.exception("unexpected error serving %s %s", request.method, request.path)
        error = SidecarError("Internal error in the sidecar.", status=500, error_type="InternalServerError")
        return error_response(error, shape)


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Check the caller's key (never logged); then keep the caller's credential from the engine."""
    sidecar = request.app[SIDECAR]
    keys = sidecar.key_ring.keys
    if keys.enabled and requires_key(request.method, request.path):
        result = keys.check(request.headers.getall("Authorization", []))
        if not result.allowed:
            log.debug(
                "%s API key: %s %s from %s", result.verdict, request.method, request.path, request.remote
            )
            if request.method == "POST" and request.path in _GENERATION_PATHS:
                sidecar.metrics.requests.labels("unauthorized").inc()
            error = unauthorized(result.message, result.challenge)
            return error_response(error, error_shape_of(request.path))
    if not sidecar.forward_authorization and "Authorization" in request.headers:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "authorization"]
        try:
            request = request.clone(headers=headers)
        except UnicodeEncodeError:
            raise SidecarError("Request headers must be UTF-8") from None
    return await handler(request)


async def _generate(request: web.Request, path: str) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    raw = await request.read()
    try:
        body = parse_json(raw)
    except JsonBodyError as exc:
        raise SidecarError(str(exc)) from None
    if not isinstance(body, dict):
        raise SidecarError("Request body must be a JSON object")
    try:
        context = decode_call_context(request.headers, uuid.uuid4().hex, time.time())
    except ProtocolError as exc:
        raise SidecarError(str(exc), param="headers") from exc
    settings = sidecar.settings
    try:
        timeout = call_timeout(request.headers, settings.max_call_seconds)
    except DeadlineError as exc:
        raise SidecarError(str(exc), param=DEADLINE_HEADER) from None
    gate = sidecar.gate
    if 0 < settings.max_queued <= gate.waiting:  # rule 2: never queued
        sidecar.metrics.rejected.labels("queue_full").inc()
        raise SidecarError(
            f"The sidecar's queue is full ({settings.max_queued} calls waiting, --max-queued); retry "
            "after the Retry-After seconds",
            status=429,
            error_type="RateLimitError",
            headers={"Retry-After": retry_after(settings.retry_after)},
        )
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    call = sidecar.queued_call(context, body)
    # rule 4: only a call that can be resumed faithfully may be stopped (resume.py rule 1)
    resumable = settings.preempt and why_not_resumable(BY_PATH[path].name, body) is None
    admission_future = gate.enter(call, sidecar.call_tokens(call, body), resumable=resumable)
    completed = False
    usage: CallUsage | None = None
    try:
        try:
            async with asyncio.timeout_at(deadline):
                admission = await admission_future
        except TimeoutError:
            sidecar.metrics.rejected.labels("deadline").inc()
            raise SidecarError(
                f"The call's deadline ({timeout:g} s, {DEADLINE_HEADER} or --max-call-seconds) passed "
                "while it was queued",
                status=504,
                error_type="TimeoutError",
            ) from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "admit %s (program %s, service %.3f s) from level %d after %.3f s",
                context.call_id, context.program_id, call.program_service, admission.level, admission.waited,
            )  # fmt: skip
        response, completed, report = await forward_call(
            sidecar, request, path, raw, body, context.call_id, admission, deadline,
            resume_id=call.call_id if resumable else None,
        )  # fmt: skip
        if report is not None:
            usage = CallUsage(
                report.exec_time, report.prompt_tokens, report.output_tokens, report.cached_tokens
            )
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        sidecar.metrics.requests.labels("client_gone").inc()
        raise
    finally:
        gate.leave(call.call_id, completed, usage)


async def generate(request: web.Request) -> web.StreamResponse:
    """Every generation API (apis.py): queued alike."""
    return await _generate(request, request.path)


async def unqueued(request: web.Request) -> web.StreamResponse:
    """``/v1/models``, stored responses (read, cancel), ``/v1/messages/count_tokens``: not generation."""
    return await passthrough(request.app[SIDECAR], request)


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    try:
        status, _ = await sidecar.client.get_text(sidecar.adapter.health_path, 2.0)
    except (EngineUnavailable, TimeoutError, aiohttp.ClientError) as exc:
        return web.json_response({"status": "engine unreachable", "detail": str(exc)}, status=503)
    if status != 200:
        return web.json_response({"status": f"engine answered {status}"}, status=503)
    return web.json_response({"status": "ready", "engine": sidecar.settings.engine_url})


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[SIDECAR].metrics.registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: SidecarSettings) -> web.Application:
    """The sidecar's aiohttp application; the engine client and the timers live as long as it does."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_errors, _auth])
    app[SIDECAR] = Sidecar(settings)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        sidecar = app[SIDECAR]
        if sidecar.key_ring.keys.enabled:
            log.info(
                "API keys: %d accepted; /health, /ready and /metrics stay open", len(sidecar.key_ring.keys)
            )
        else:
            log.info("no --api-key or --api-key-file: the sidecar accepts every caller")
        await sidecar.client.start()

        async def tick() -> None:
            sidecar.gate.tick()

        timers = [
            asyncio.create_task(_every(settings.probe_interval, "load probe", sidecar.probe_once)),
            asyncio.create_task(_every(settings.tick_interval, "tick", tick)),
        ]
        if settings.api_key_file is not None:
            reload = _every(KEY_FILE_RELOAD_SECONDS, "key file reload", sidecar.reload_key_file)
            timers.append(asyncio.create_task(reload))
        yield
        for task in timers:
            task.cancel()
        for task in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sidecar.client.close()

    app.cleanup_ctx.append(lifetime)
    for path in BY_PATH:
        app.router.add_post(path, generate)
    app.router.add_get("/v1/responses/{response_id}", unqueued)
    app.router.add_post("/v1/responses/{response_id}/cancel", unqueued)
    app.router.add_post("/v1/messages/count_tokens", unqueued)
    app.router.add_get("/v1/models", unqueued)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


def protocol_error_body(status: int, message: str) -> dict[str, Any]:
    """aiohttp's own answers (a malformed request, a head over its limits) in the sidecar's shape."""
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return SidecarError(message, status=status, error_type=kind).body()


async def serve(settings: SidecarSettings) -> None:
    def started(port: int) -> None:
        log.info(
            "sidecar for %s engine %s (scheduler %s, window %s) listening on http://%s:%d",
            settings.engine_kind,
            settings.engine_url,
            settings.scheduler,
            settings.window_mode,
            settings.host,
            port,
        )

    await serve_app(
        create_app(settings),
        "sidecar",
        settings.host,
        settings.port,
        on_started=started,
        error_body=protocol_error_body,
    )


def run(settings: SidecarSettings) -> int:
    return run_service("sidecar", settings.host, settings.port, settings.log_level, lambda: serve(settings))
