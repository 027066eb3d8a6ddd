"""One generation call through the proxy: read, identify, route, start, forward, retry (the IO shell).

Decisions are made elsewhere: the API's module reads the body (apis/), identity.py names the program,
the router picks an engine, the store (store.py) answers for the program table, exchange.py and
relay.py move one attempt's bytes. This module runs them in order and retries. Per call:

1. Read and check the body (413, 400, in the API's error shape), the identity (400) and the model (404
   if no backend lists it).
2. Route over the backends that serve the model, with this replica's view of the fleet's loads and of
   the program's pin (the store's); then ``start`` in the store, which may redirect the call to the
   program's existing pin, and whose answer may come ahead of Redis's (store.py rule 2).
3. Forward the body unchanged (but for a client's own ``priority`` field, apis/base.py rule 5) with
   the call's priority context (``X-Autellix-*``); the client's own ``X-Autellix-*`` headers are
   dropped, so a client cannot forge a priority (headers.py).
4. Before the first byte, a connection failure or a 502/503 answer ends the attempt as failed (no
   service added) and the call is routed again without that engine, after a jittered exponential
   backoff, at most ``retries`` times (exchange.py rule 2). After the first byte there is no retry: a
   broken stream ends with the API's error event; a broken non-streaming read is a 502.
5. The completion report (sidecar) or, against a bare engine, the proxy's own measurement is recorded
   before the client gets the end of the reply (the sidecar's report precedes the stream's last event;
   a bare engine's stream is finished just before it), so the program's next call sees the updated
   service. "Recorded" is store.py rule 4: memory has applied it; a standalone Redis has it *written*
   on the replica's ordered link and acknowledges it in the background, which keeps one Redis round
   trip off every call. The program's next call through this replica is executed by Redis after the
   finish (same connection, FIFO), so it sees the service exactly. Through another replica, its start
   may reach Redis before this finish only if the client gets the reply, sends its next call and that
   replica's start arrives, all within the finish's one-way trip to Redis (shorter than the round trip
   the next call needs to reach a proxy); it then gets the service without this call, as an agent's
   parallel calls do, and this finish still counts in the program. A Redis Cluster table (not ordered)
   is still awaited. Measurement without a sidecar (an approximation): queue wait = request sent →
   first response byte, execution = first byte → the stream's last event (or last byte); for
   non-streaming replies, whose first byte is their last, execution = request sent → reply, wait 0.
6. A client that disconnects cancels the handler (``handler_cancellation``); the upstream connection is
   closed, which aborts the call in the sidecar or engine, and the call is finished as failed with the
   time measured so far, in a background task that the cancellation cannot interrupt. A write that
   finds the client gone mid-stream is the same event seen first, and ends the same way. A start the
   client leaves during is given back by the store (store.py rule 3).
7. Once the client has the stream's last event (``data: [DONE]`` and its blank line, for chat) the
   call is done: the client's reply is ended at once, and what the upstream still sends (normally only
   the end of its chunked body) is read in the background, so a client that closes its connection
   right after the end interrupts nothing and is no error.
8. A call without a program id is a program of its own, ended together with its call's finish, unless
   its reply may be continued (a Responses call the engine may store): then it is kept, to expire.
9. A call that continues a stored reply (Responses' ``previous_response_id``) joins the program the
   reply belongs to (unless the client names one) and goes to the engine that stored it, the only one
   that can continue it: no other engine is tried, and none is pinned. The reply's id, read from the
   reply (exchange.py) or its stream (relay.py), is remembered with the call's program and engine
   (store.py rule 7) before the client can see it. A reply the proxy has no record of (expired, or
   stored before it ran) goes wherever routing sends it; the engine answers (404 if it does not have it).
   A reply whose program belongs to another tenant is one the proxy has no record of (tenants.py rule 3).
10. Every program id, named by the client or by the proxy, is the tenant's table id from here on
   (tenants.py rule 2); with ``--require-signed-ids`` an id the client named without a valid tag is a
   403 before anything else happens (tenants.py rule 4).
11. Bounds and deadline (limits.py): a tenant past its bound is a 429 before the body is read; an
    engine at its bound is left out of routing (all full: a 429); the call's deadline covers every
    attempt and backoff (exchange.py and relay.py answer 504 or cut the stream when it passes).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

from aiohttp import web

from autellix.api_errors import ApiError, bad_request
from autellix.deadlines import DEADLINE_HEADER, DeadlineError, call_timeout, deadline_exceeded

from .apis import Api
from .attempt import Attempt, Ledger
from .backends import BackendPool
from .exchange import Exchange, Retry
from .identity import IdentityError, extract_identity, program_kind
from .limits import DEFAULT_TENANT, CallLimits, LimitSettings
from .metrics import ProxyMetrics
from .programs import CallStart
from .routing import EngineView, NoEngineAvailable, RouteRequest, RoutingPolicy
from .store import ProgramStore
from .tenants import OPEN_TENANT, ProgramIds, Tenant, UnsignedProgramId

TENANT = web.RequestKey("tenant", Tenant)  # set by the auth middleware (tenants.py rule 1)


def tenant_of(request: web.Request) -> Tenant:
    """tenants.py rule 1: the accepted key's tenant, or the open proxy's one."""
    tenant: Tenant = request.get(TENANT, OPEN_TENANT)
    return tenant


@dataclass(frozen=True, slots=True)
class CallSettings:
    retries: int = 2
    backoff: float = 0.05
    program_kinds: frozenset[str] = frozenset()  # identity.py rule 5
    ids: ProgramIds = field(default_factory=ProgramIds)  # tenants.py rules 2 and 4


class CallPath:
    """The per-app call path (see the module doc)."""

    def __init__(
        self,
        pool: BackendPool,
        store: ProgramStore,
        router: RoutingPolicy,
        exchange: Exchange,
        ledger: Ledger,
        metrics: ProxyMetrics,
        settings: CallSettings,
        replica_id: str,
        rng: random.Random | None = None,
        limits: CallLimits | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.router = router
        self.exchange = exchange
        self.ledger = ledger
        self.metrics = metrics
        self.settings = settings
        self.replica_id = replica_id
        self.rng = rng or random.Random(0)
        self._seq = itertools.count()
        self.limits = limits or CallLimits(LimitSettings())

    async def handle(self, request: web.Request, api: Api) -> web.StreamResponse:
        """Rule 11 around the call: its deadline read, its tenant counted in and out."""
        try:
            timeout = call_timeout(request.headers, self.limits.settings.max_call_seconds)
        except DeadlineError as exc:
            raise bad_request(str(exc), param=DEADLINE_HEADER, code="invalid_header") from None
        tenant = tenant_of(request).key_id or DEFAULT_TENANT  # limits.py rule 1
        try:
            self.limits.enter(tenant)
        except ApiError:
            self.metrics.child(self.metrics.rejected, "key_full").inc()
            raise
        try:
            if timeout is None:
                return await self._handle(request, api, None)
            deadline = asyncio.get_running_loop().time() + timeout
            return await self._handle(request, api, (deadline, timeout))
        except ApiError as exc:
            if exc.code == "deadline_exceeded":
                self.metrics.child(self.metrics.rejected, "deadline").inc()
            raise
        finally:
            self.limits.leave(tenant)

    async def _handle(
        self, request: web.Request, api: Api, deadline: tuple[float, float] | None
    ) -> web.StreamResponse:
        started = time.perf_counter()
        raw = await request.read()
        body = api.parse(raw)
        if body.upstream is not None:  # the client's own priority removed (apis/base.py rule 5)
            raw = body.upstream
        try:
            identity = extract_identity(request.headers, body.metadata, body.program_hint)
        except IdentityError as exc:
            raise bad_request(str(exc), param=exc.param, code="invalid_header") from None
        tenant = tenant_of(request)
        named = identity.program_id
        if named is not None:
            try:
                named = self.settings.ids.table_id(tenant, named)
            except UnsignedProgramId as exc:
                param = identity.source.partition(":")[2] or None
                raise ApiError(403, str(exc), code="unsigned_program_id", param=param) from None
        store = self.store
        stored = await store.find_reply(body.chain, time.time()) if body.chain is not None else None
        if stored is not None and not tenant.owns(stored.program_id):
            stored = None  # another tenant's reply: unknown here (tenants.py rule 3)
        serving = self.pool.serving(body.model)
        if serving is None:
            raise ApiError(
                404, f"The model `{body.model}` does not exist.", code="model_not_found", param="model"
            )
        call_id = f"{self.replica_id}-{next(self._seq)}"
        program_id = named or (stored.program_id if stored is not None else None)
        named_here = program_id is None
        one_shot = named_here and not body.keeps_program  # rule 8
        program_id = program_id or tenant.table_id(f"call-{call_id}")
        required = stored.engine_id if stored is not None else None  # rule 9
        kind = program_kind(request.headers, body.metadata, self.settings.program_kinds)
        store.prepare(program_id, named_here)
        excluded: set[str] = set()
        last_error: ApiError | None = None
        retries = 0
        for attempt in itertools.count():
            views = [
                EngineView(
                    b.engine_id,
                    healthy=b.healthy
                    and b.engine_id not in excluded
                    and required in (None, b.engine_id)
                    and not self.limits.engine_full(b.in_flight),
                    outstanding=store.loads.get(b.engine_id, 0),
                    resident=self.ledger.resident(b.engine_id),
                )
                for b in serving
            ]
            route = RouteRequest(
                program_id=program_id,
                thread_id=identity.thread_id,
                input_tokens=body.input_tokens,
                prefix=body.prefix,
                pinned_engine=store.pin(program_id),
                now=time.time(),
            )
            try:
                decision = self.router.route(route, views)
            except NoEngineAvailable as exc:
                if one_shot:
                    await store.end(program_id, time.time())
                if last_error is None and any(
                    b.healthy and b.engine_id not in excluded and self.limits.engine_full(b.in_flight)
                    for b in serving
                ):
                    self.metrics.child(self.metrics.rejected, "engines_full").inc()
                    raise self.limits.engines_full() from None
                if last_error is None and required is not None:
                    raise ApiError(
                        503,
                        f"The engine that stores response {body.chain!r} ({required}) is not available",
                        code="no_backend",
                        param="previous_response_id",
                    ) from None
                raise last_error or ApiError(503, f"No backend available: {exc}", code="no_backend") from None
            store.count_routed(decision.engine_id)
            call = f"{call_id}.{attempt}" if attempt else call_id
            pin = decision.pin and required is None  # a pin could redirect the call away (rule 9)
            engine_id, thread_id = decision.engine_id, identity.thread_id
            start = CallStart(program_id, call, engine_id, thread_id, body.input_tokens, pin, kind)
            result = await store.start(start, time.time(), one_shot=one_shot)
            engine = result.engine_id
            redirected = engine != decision.engine_id
            reason = "pin_redirect" if redirected else self.metrics.reason(decision.reason)
            self.metrics.child(self.metrics.routing, engine, reason).inc()
            backend = self.pool.by_id.get(engine)
            if backend is None or engine in excluded or not backend.healthy or backend not in serving:
                # the program's pin names an engine this call cannot use: give the attempt back
                given_back = Attempt(program_id, call, False, started)
                await self.ledger.finish(given_back, None, 0.0, 0.0, ok=False, end=False)
                excluded.add(engine)
                continue
            this = Attempt(program_id, call, one_shot, started, result.service_atlas, engine=engine)
            if deadline is not None:
                this.deadline, this.timeout = deadline
            try:
                return await self.exchange.run(
                    request, api, backend, body, raw, identity.thread_id, result, this
                )
            except Retry as failure:
                last_error = failure.error
                self.metrics.upstream_errors.labels(engine, failure.kind).inc()
                excluded.add(engine)
                if retries >= self.settings.retries:
                    if one_shot:
                        await store.end(program_id, time.time())
                    raise failure.error from None
                retries += 1
                self.metrics.retries.labels(engine).inc()
                delay = self.settings.backoff * (2 ** (retries - 1)) * (0.5 + self.rng.random())
                if deadline is not None:
                    left = deadline[0] - asyncio.get_running_loop().time()
                    if left <= delay:
                        if one_shot:
                            await store.end(program_id, time.time())
                        raise deadline_exceeded(deadline[1], "before any engine answered") from None
                if delay > 0:
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")
