"""``autellix proxy``: the aiohttp wiring of the program-aware front end (DESIGN.md §1, §3, §5).

Only wiring lives here: routes, the app's lifetime (``cleanup_ctx`` owns the upstream transport, the
Redis pool and the background tasks), errors in each route's API shape (OpenAI's; Anthropic's on the
Messages routes), and metrics per request. The call path is :mod:`.calls` (one module per API under
:mod:`.apis`); the program table is :mod:`.store`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/responses``,
``POST /v1/messages`` (the generation APIs, apis/), ``GET /v1/responses/{id}``,
``POST /v1/responses/{id}/cancel`` and ``POST /v1/messages/count_tokens`` (passthrough.py),
``GET /v1/models`` (the union of the backends' models), ``POST /v1/programs`` (start a program:
``{"id": ...}``), ``GET /v1/programs/{id}`` (its state, for operators), ``DELETE /v1/programs/{id}``
(end it), ``GET /health`` (liveness),
``GET /ready`` (a healthy backend and a reachable table), ``GET /metrics`` (Prometheus),
``GET``/``POST /admin/backends`` and ``DELETE /admin/backends/{name}`` (admin.py).

Background tasks: backend health checks (every ``health_check_interval``); table maintenance every
second (lease renewal, Redis probe and recovery while degraded, the fleet's loads); program gc every
``gc_interval``; with ``--api-key-file``, a re-read of the key file every ``KEY_FILE_RELOAD_SECONDS``;
per ``--backend-dns`` name, a resolution every ``dns_interval`` (dns_watch.py; the first before serving).

API keys (auth.py): the auth middleware runs inside the error middleware, so a 401 is OpenAI-style JSON
and is counted by route and status like any answer, and before any handler, so a rejected call never
reaches the program table or a backend. It also takes the client's ``Authorization`` off the request
when that header is not the backend's business (auth.py rule 6); ``--backend-api-key`` is a default
header of the upstream session.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autellix.api_errors import ApiError, ErrorShape, bad_request, error_body, unauthorized
from autellix.auth import KeyRing, bearer, forwards_client_authorization, read_key_file, requires_key
from autellix.jsonbody import JsonBodyError, parse_json
from autellix.serving import reload_keys, run_service, serve_app

from .admin import BackendAdmin
from .apis import APIS, Api, error_shape_of
from .attempt import Ledger
from .backends import BackendPool
from .background import BackgroundTasks
from .calls import TENANT, CallPath, CallSettings, tenant_of
from .config import ProxySettings
from .dns_watch import DnsWatch, make_resolver
from .exchange import Exchange
from .failover import FailoverTable, LocalProgramTable
from .headers import without_authorization
from .identity import IdentityError, check_id
from .limits import CallLimits
from .metrics import ProxyMetrics
from .passthrough import Passthrough
from .programs import CallFinish, ProgramExpiry, ProgramState
from .programs.redis_table import RedisProgramTable
from .relay import StreamRelay
from .routing import get_router
from .store import ProgramStore, StoreEvents
from .tenants import OPEN_TENANT, ProgramIds, ProgramIdSigner, Tenant, UnsignedProgramId, load_secret
from .transport import AiohttpTransport, Transport

log = logging.getLogger("autellix.proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY_FILE_RELOAD_SECONDS = 10.0  # a mounted Secret changes within about a minute; this adds little


@dataclass(slots=True)
class Proxy:
    """Everything one app owns, available to handlers as ``request.app[PROXY]``."""

    settings: ProxySettings
    metrics: ProxyMetrics
    transport: Transport
    pool: BackendPool
    store: ProgramStore
    calls: CallPath
    passthrough: Passthrough
    background: BackgroundTasks
    replica_id: str
    ids: ProgramIds
    admin: BackendAdmin


@dataclass(frozen=True, slots=True)
class Guard:
    """The API keys in force (the ring swaps them when the key file changes), what crosses upstream."""

    ring: KeyRing
    forward_authorization: bool  # the client's Authorization reaches the backends (auth.py rule 6)


PROXY = web.AppKey("proxy", Proxy)
METRICS = web.AppKey("metrics", ProxyMetrics)
GUARD = web.AppKey("guard", Guard)


def error_response(
    status: int,
    message: str,
    code: str | int | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    shape: ErrorShape = "openai",
) -> web.Response:
    body = error_body(status, message, code=code, param=param, shape=shape)
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON in the route's API shape; the request is counted by route and status."""
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    shape = error_shape_of(request.path)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.code, exc.param, exc.headers, shape)
    except web.HTTPRequestEntityTooLarge as exc:
        message = f"Request body is too large ({exc.text})"
        response = error_response(413, message, "body_too_large", shape=shape)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else "method_not_allowed" if exc.status == 405 else None
        response = error_response(exc.status, exc.reason, code, shape=shape)
    # the body's framing broke (chunked encoding, length) or its Content-Encoding does not decode
    except (BadHttpMessage, RequestPayloadError) as exc:
        message = f"Malformed request body: {type(exc).__name__}"
        response = error_response(400, message, "invalid_body", shape=shape)
    except asyncio.CancelledError:
        metrics.requests.labels(route, "499").inc()
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = error_response(500, "Internal proxy error", "internal_error", shape=shape)
    metrics.child(metrics.requests, route, str(response.status)).inc()
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """auth.py rules 2-6: check the key (never logged), then hide the client's credential upstream."""
    guard = request.app[GUARD]
    keys = guard.ring.keys
    if keys.enabled and requires_key(request.method, request.path):
        presented = request.headers.getall("Authorization", [])
        if not presented and "x-api-key" in request.headers and error_shape_of(request.path) == "anthropic":
            presented = [bearer(request.headers["x-api-key"])]  # what Anthropic's SDKs send
        result = keys.check(presented)
        if not result.allowed:
            log.debug(
                "%s API key: %s %s from %s", result.verdict, request.method, request.path, request.remote
            )
            raise unauthorized(result.message, result.challenge)
        if result.key_id is not None:
            request[TENANT] = Tenant(result.key_id)  # tenants.py rule 1; limits.py rule 1 counts it
    credential = "Authorization" in request.headers or "x-api-key" in request.headers
    if not guard.forward_authorization and credential:
        try:  # the clone keeps the request's state, the tenant with it
            request = request.clone(headers=without_authorization(request.headers.items()))
        except UnicodeEncodeError:
            raise bad_request("Request headers must be UTF-8", code="invalid_headers") from None
    return await handler(request)


def make_ids(settings: ProxySettings) -> ProgramIds:
    """tenants.py rules 4-5: the signer the settings ask for (a random secret if required but unset)."""
    secret = load_secret(settings.program_id_secret, settings.program_id_secret_file)
    if secret is None and settings.require_signed_ids:
        log.warning(
            "--require-signed-ids without --program-id-secret: a random secret for this process; signed "
            "ids will not survive a restart or work on another replica"
        )
        secret = secrets.token_bytes(32)
    signer = ProgramIdSigner(secret) if secret is not None else None
    return ProgramIds(signer, settings.require_signed_ids)


async def reload_key_file(guard: Guard, settings: ProxySettings) -> None:
    """Re-read ``--api-key-file``; a file that cannot be used keeps the keys in force (auth.py rule 7)."""
    assert settings.api_key_file is not None
    await reload_keys(guard.ring, settings.api_key_file, log)


def make_guard(settings: ProxySettings) -> Guard:
    from_file = read_key_file(settings.api_key_file) if settings.api_key_file is not None else ()
    ring = KeyRing.of(settings.api_key, from_file)
    return Guard(ring, forwards_client_authorization(ring.keys.enabled, settings.backend_api_key))


def generation_route(api: Api) -> Handler:
    """The handler of one generation API: the call path, the same for every API."""

    async def generate(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].calls.handle(request, api)

    generate.__name__ = f"generate_{api.name}"
    return generate


async def stored_response(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel`` (passthrough.py rule 1)."""
    return await request.app[PROXY].passthrough.stored_response(request)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens`` (passthrough.py rule 2)."""
    return await request.app[PROXY].passthrough.any_backend(request)


async def admin_list(request: web.Request) -> web.Response:
    """admin.py rule 1."""
    return await request.app[PROXY].admin.list(request)


async def admin_add(request: web.Request) -> web.Response:
    """admin.py rule 2."""
    return await request.app[PROXY].admin.add(request)


async def admin_remove(request: web.Request) -> web.Response:
    """admin.py rule 3."""
    return await request.app[PROXY].admin.remove(request)


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": request.app[PROXY].pool.model_cards()})


async def health(request: web.Request) -> web.Response:
    """Liveness; which process answered (``--workers``: every worker has its own pid and replica id)."""
    proxy = request.app.get(PROXY)
    replica = proxy.replica_id if proxy is not None else None
    return web.json_response({"status": "ok", "pid": os.getpid(), "replica": replica})


async def ready(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    backends = {b.engine_id: b.healthy for b in proxy.pool.backends}
    table_ok = proxy.store.reachable or not proxy.settings.ready_requires_table
    ok = proxy.pool.any_healthy and table_ok
    body = {"ready": ok, "backends": backends, "table": proxy.store.mode}
    return web.json_response(body, status=200 if ok else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    registry = request.app[METRICS].registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def program_json(state: ProgramState, tenant: Tenant = OPEN_TENANT) -> dict[str, Any]:
    data = asdict(state)
    data["id"] = tenant.client_id(data.pop("program_id"))
    data["object"] = "program"
    data["last_activity"] = state.last_activity
    data["threads"] = sorted({call.thread_id or "" for call in state.in_flight})
    return data


def _program_id(request: web.Request) -> tuple[str, str]:
    """The path's program id as the client named it, and its table id (tenants.py rules 2, 4)."""
    try:
        program_id = check_id(request.match_info["program_id"], "program id")
    except IdentityError as exc:
        raise bad_request(str(exc), param="id", code="invalid_program_id") from None
    return program_id, table_id(request, program_id, "id")


def table_id(request: web.Request, program_id: str, param: str) -> str:
    try:
        return request.app[PROXY].ids.table_id(tenant_of(request), program_id)
    except UnsignedProgramId as exc:
        raise ApiError(403, str(exc), code="unsigned_program_id", param=param) from None


async def create_program(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    raw = await request.read()
    requested: Any = None
    if raw.strip():
        try:
            data = parse_json(raw)
        except JsonBodyError as exc:
            raise bad_request(str(exc), code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("Request body must be a JSON object", code="invalid_json")
        requested = data.get("id")
        if requested is not None and (not isinstance(requested, str) or not requested):
            raise bad_request("'id' must be a non-empty string", param="id", code="invalid_type")
    if requested is not None:
        try:
            program_id = check_id(requested, "id")
        except IdentityError as exc:
            raise bad_request(str(exc), param="id", code="invalid_program_id") from None
        longest = proxy.ids.max_requested_length
        if len(program_id) > longest:  # its signed form would not fit (tenants.py rule 4)
            message = f"id must be at most {longest} characters when ids are signed, got {len(program_id)}"
            raise bad_request(message, param="id", code="invalid_program_id")
    else:
        program_id = f"prog-{secrets.token_hex(12)}"
    tenant = tenant_of(request)
    program_id = proxy.ids.issue(tenant, program_id)
    created = await proxy.store.create(tenant.table_id(program_id), time.time())
    return web.json_response({"id": program_id, "object": "program", "created": created}, status=201)


async def get_program(request: web.Request) -> web.Response:
    program_id, table = _program_id(request)
    state = await request.app[PROXY].store.get(table)
    if state is None:
        raise ApiError(404, f"No program {program_id!r}", code="program_not_found", param="id")
    return web.json_response(program_json(state, tenant_of(request)))


async def delete_program(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    program_id, table = _program_id(request)
    state = await proxy.store.end(table, time.time(), deleted=True)
    if state is None:
        raise ApiError(404, f"No program {program_id!r}", code="program_not_found", param="id")
    body = {"id": program_id, "object": "program", "deleted": True}
    return web.json_response({**body, "state": program_json(state, tenant_of(request))})


async def _every(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:  # a background failure must never stop the loop
            log.exception("background task failed")


def build_store(
    settings: ProxySettings, replica_id: str, metrics: ProxyMetrics, background: BackgroundTasks
) -> ProgramStore:
    expiry = ProgramExpiry(idle_ttl=settings.program_ttl, stuck_ttl=settings.stuck_ttl)
    redis = None
    if settings.redis_url is not None:
        redis = RedisProgramTable(
            settings.redis_url,
            expiry=expiry,
            key_prefix=settings.redis_key_prefix,
            replica_id=replica_id,
            cluster=settings.redis_cluster,
            lease_ttl=settings.lease_ttl,
            socket_timeout=settings.redis_timeout,
        )
    tables = FailoverTable(
        redis,
        LocalProgramTable(expiry),
        metrics.observe_table,
        lambda degraded: metrics.table_degraded.set(1 if degraded else 0),
    )

    def on_finish(finish: CallFinish) -> None:
        metrics.call_exec.observe(max(0.0, finish.exec_time))
        metrics.call_wait.observe(max(0.0, finish.queue_wait))

    def on_program_end(state: ProgramState, ended_by: str) -> None:
        if ended_by != "expired":  # as before the program-level histograms: explicit and one-call ends
            metrics.program_service.observe(state.service_plas)
            metrics.program_wait.observe(state.wait)
        if state.last_completion is None:
            return  # never ran a call: nothing to measure
        kind = state.kind or "unspecified"
        response = state.response_time
        metrics.child(metrics.program_response, kind, ended_by).observe(response)
        if state.output_tokens > 0:
            metrics.child(metrics.program_token_latency, kind, ended_by).observe(
                response / state.output_tokens
            )

    events = StoreEvents(
        on_start_ahead=lambda outcome: metrics.child(metrics.starts_ahead, outcome).inc(),
        on_finish=on_finish,
        on_program_end=on_program_end,
    )
    return ProgramStore(tables, starts_ahead=settings.starts_ahead, events=events, background=background)


def upstream_session(settings: ProxySettings) -> aiohttp.ClientSession:
    """The one pooled session every backend is reached through (the production transport's)."""
    backend_key = settings.backend_api_key
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
        auto_decompress=False,
        # one session serves every client: a backend's Set-Cookie must not ride on other clients' calls
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"Authorization": bearer(backend_key)} if backend_key is not None else None,
    )


def create_app(
    settings: ProxySettings, metrics: ProxyMetrics | None = None, transport: Transport | None = None
) -> web.Application:
    """The proxy app; ``transport`` replaces the real upstream (tests: transport.MockTransport)."""
    metrics = metrics or ProxyMetrics()
    guard = make_guard(settings)
    # An open proxy that forwards the client's Authorization (no keys, no key file, no backend key) has
    # nothing for the auth layer to do on any request: leave it out of every call's path.
    guarded = guard.ring.keys.enabled or settings.api_key_file is not None or not guard.forward_authorization
    middlewares = [errors_middleware, auth_middleware] if guarded else [errors_middleware]
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[METRICS] = metrics
    app[GUARD] = guard

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        replica_id = settings.replica_id or secrets.token_hex(4)
        if guard.ring.keys.enabled:
            log.info("API keys: %d accepted; /health, /ready and /metrics stay open", len(guard.ring.keys))
        else:
            log.info("no --api-key or --api-key-file: the proxy is open, every client is accepted")
        session: aiohttp.ClientSession | None = None
        upstream = transport
        if upstream is None:
            session = upstream_session(settings)
            upstream = AiohttpTransport(session, settings.connect_timeout, settings.read_timeout)

        def on_backend(backend: Any) -> None:
            metrics.backend_healthy.labels(backend.engine_id).set(1 if backend.healthy else 0)

        pool = BackendPool(
            settings.backends(),
            upstream,
            interval=settings.health_check_interval,
            timeout=settings.health_check_timeout,
            failure_threshold=settings.health_failure_threshold,
            success_threshold=settings.health_success_threshold,
            on_change=on_backend,
            on_remove=lambda backend: metrics.forget_engine(backend.engine_id),
        )
        background = BackgroundTasks()
        resolver = make_resolver(settings.dns_nameserver, min(2.0, settings.dns_interval))
        watches = [
            DnsWatch(pool, resolver, name, port, lambda b: background.spawn(pool.check_new(b)))
            for name, port in settings.dns_targets()
        ]
        for watch in watches:  # the first answer before serving, as the first health checks
            await watch.refresh()
        store = build_store(settings, replica_id, metrics, background)
        if store.redis is None:
            log.info("no --redis-url: programs live in this process's memory (one replica only)")
        else:
            await store.connect()
            if not store.degraded:
                log.info("program table in Redis at %s (replica %s)", settings.redis_url, replica_id)
        metrics.table_degraded.set(1 if store.degraded else 0)
        router = get_router(settings.router_config(), rng=random.Random(0))
        ids = make_ids(settings)
        ledger = Ledger(store, metrics, background)
        exchange = Exchange(
            upstream,
            pool,
            ledger,
            StreamRelay(ledger, metrics, background),
            metrics,
            owns_upstream_credential=not guard.forward_authorization,
        )
        calls = CallPath(
            pool,
            store,
            router,
            exchange,
            ledger,
            metrics,
            CallSettings(settings.retries, settings.retry_backoff, frozenset(settings.program_kinds), ids),
            replica_id,
            random.Random(),
            CallLimits(settings.limit_settings()),
        )
        passthrough = Passthrough(upstream, pool, store)
        app[PROXY] = Proxy(
            settings,
            metrics,
            upstream,
            pool,
            store,
            calls,
            passthrough,
            background,
            replica_id,
            ids,
            BackendAdmin(pool, guard.ring.keys.enabled or settings.api_key_file is not None),
        )
        await pool.check_all()

        async def maintain() -> None:
            await store.maintain()
            metrics.table_degraded.set(1 if store.degraded else 0)
            store.refresh_loads(await store.engine_loads())
            for engine in pool.by_id:
                metrics.child(metrics.engine_load, engine).set(store.loads.get(engine, 0))

        async def collect() -> None:
            expired = await store.gc(time.time())
            if expired:
                log.debug("expired %d idle programs", len(expired))
            metrics.active_programs.set(await store.program_count())

        tasks = [
            asyncio.create_task(pool.run()),
            asyncio.create_task(_every(1.0, maintain)),
            asyncio.create_task(_every(settings.gc_interval, collect)),
            *(asyncio.create_task(watch.run(settings.dns_interval)) for watch in watches),
        ]
        if settings.api_key_file is not None:

            async def reload() -> None:
                await reload_key_file(guard, settings)

            tasks.append(asyncio.create_task(_every(KEY_FILE_RELOAD_SECONDS, reload)))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await background.wait(timeout=5.0)
        if session is not None:
            await session.close()
        await store.aclose()

    app.cleanup_ctx.append(lifetime)
    for api in APIS:
        app.router.add_post(api.path, generation_route(api))
    app.router.add_get("/v1/responses/{response_id}", stored_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", stored_response)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/programs", create_program)
    app.router.add_get("/v1/programs/{program_id}", get_program)
    app.router.add_delete("/v1/programs/{program_id}", delete_program)
    app.router.add_get("/admin/backends", admin_list)
    app.router.add_post("/admin/backends", admin_add)
    app.router.add_delete("/admin/backends/{name}", admin_remove)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def protocol_error_body(status: int, message: str) -> dict[str, Any]:
    """aiohttp's own answers (a malformed request, a head over its limits) in OpenAI's shape."""
    code = {414: "request_line_too_large", 431: "headers_too_large"}.get(status, "invalid_request")
    return error_body(status, message, code=code if status < 500 else "internal_error")


async def serve(settings: ProxySettings, reuse_port: bool = False) -> None:
    app = create_app(settings)

    def started(port: int) -> None:
        # Start-up objects (modules, settings, routers) never die: keep them out of the collector's
        # scans, which otherwise add millisecond pauses to the tail latency of a busy replica.
        gc.collect()
        gc.freeze()
        proxy = app[PROXY]
        log.info(
            "proxy listening on http://%s:%d: %d backend(s), router %s, table %s",
            settings.host,
            port,
            len(proxy.pool.backends),
            settings.router,
            proxy.store.mode,
        )

    await serve_app(
        app,
        "proxy",
        settings.host,
        settings.port,
        on_started=started,
        error_body=protocol_error_body,
        reuse_port=reuse_port,
    )


def run(settings: ProxySettings) -> int:
    if settings.workers > 1:
        from .workers import supervise

        return supervise(settings)
    return run_service("proxy", settings.host, settings.port, settings.log_level, lambda: serve(settings))


def run_worker(settings: ProxySettings) -> int:
    """One of ``--workers`` (workers.py): the same proxy on a port it shares."""
    return run_service(
        "proxy", settings.host, settings.port, settings.log_level, lambda: serve(settings, reuse_port=True)
    )
