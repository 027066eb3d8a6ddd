"""The backend pool: which engines (or sidecars) exist, which are healthy, which models they serve.

Theory of operation
-------------------
1. Health: every ``interval`` seconds each backend gets ``GET /ready`` (``/health`` where ``/ready`` is
   404, as on vLLM and SGLang); a 2xx within ``timeout`` passes, anything else fails. A real call that
   cannot connect to a backend fails too (a passive check, :meth:`BackendPool.record_call_failure`).
   An unhealthy backend is offered to routers as ``healthy=False`` (never chosen).
2. Hysteresis (:class:`HealthState`, the rule production routers and load balancers use): a backend in
   the pool leaves it after ``failure_threshold`` consecutive failures (checks or calls), so a backend
   that answers one check late because it is busy keeps its calls; a backend out of the pool returns
   after ``success_threshold`` consecutive passing checks, so a backend that recovers for one check
   does not flap. A backend that was never in the pool enters at its first passing check (start-up and
   engines still loading are not slowed down). A refused connection counts like any other failure
   rather than ejecting at once: its call is retried on another backend before the first byte, so
   waiting for the threshold costs retries, not errors, and a restart blip keeps the backend (errors
   of our own host, out of sockets or ports, are not counted at all: transport.py rule 1).
3. Models: a healthy backend's ``GET /v1/models`` is read on its first passing check and then every
   ``models_every`` checks. The lists are kept while a backend is down (it will serve the same models
   when it returns), so a model is *known* once any backend has listed it.
4. A call for model M may go to the backends that list M. A model no backend lists is unknown (404),
   unless no backend has listed anything yet (then every backend is a candidate: the engines decide).
   A call without a model may go to any backend.
5. The first round of checks runs before the proxy starts serving, so ``/ready`` and the model lists
   are right from the first request.
6. Backends come and go (discovery.py): :meth:`BackendPool.add` and :meth:`BackendPool.remove` swap in
   a new list and a new index rather than editing them, so a loop over the old ones is undisturbed.
   A removed backend takes no new call; a call in flight holds its :class:`Backend` and finishes. An
   added one is checked at once (:meth:`BackendPool.check`, by the caller) and, like any backend that
   was never in the pool, enters it at its first passing check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .transport import Transport, TransportError, UpstreamBroken, UpstreamRequest, UpstreamUnavailable

log = logging.getLogger("autellix.proxy.backends")


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    failures: int = 3  # consecutive failures that take a backend out of the pool
    successes: int = 2  # consecutive passing checks that bring it back

    def __post_init__(self) -> None:
        if self.failures < 1 or self.successes < 1:
            raise ValueError("health thresholds must be at least 1")


@dataclass(frozen=True, slots=True)
class HealthState:
    """One backend's health after its observations so far (rule 2); pure, no clock needed."""

    healthy: bool = False
    failures: int = 0  # consecutive failed observations
    successes: int = 0  # consecutive passing checks
    admitted: bool = False  # has been in the pool at least once

    def observe(self, ok: bool, thresholds: HealthThresholds) -> HealthState:
        if ok:
            successes = self.successes + 1
            healthy = self.healthy or not self.admitted or successes >= thresholds.successes
            return HealthState(healthy, 0, successes, self.admitted or healthy)
        failures = self.failures + 1
        healthy = self.healthy and failures < thresholds.failures
        return HealthState(healthy, failures, 0, self.admitted)


@dataclass(slots=True)
class Backend:
    engine_id: str
    url: str
    health: HealthState = field(default_factory=HealthState)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model id → its card
    checks: int = 0
    last_error: str | None = None
    in_flight: int = 0  # this replica's calls on it
    health_path: str = "/ready"  # falls back to /health for backends that have no /ready
    source: str = "static"  # discovery.py rule 1

    @property
    def healthy(self) -> bool:
        """In the pool: routers may choose it."""
        return self.health.healthy


class BackendPool:
    def __init__(
        self,
        backends: Sequence[tuple[str, str]],
        transport: Transport,
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        failure_threshold: int = 3,
        success_threshold: int = 2,
        models_every: int = 5,
        on_change: Callable[[Backend], None] | None = None,
        on_remove: Callable[[Backend], None] | None = None,
    ) -> None:
        self.backends = [Backend(engine_id, url) for engine_id, url in backends]
        self.by_id = {backend.engine_id: backend for backend in self.backends}
        self._on_remove = on_remove or (lambda backend: None)
        self.thresholds = HealthThresholds(failure_threshold, success_threshold)
        self._transport = transport
        self._interval = interval
        self._timeout = timeout
        self._models_every = max(1, models_every)
        self._on_change = on_change or (lambda backend: None)

    def observe(self, backend: Backend, ok: bool, error: str | None, source: str = "health check") -> None:
        """Apply one observation (rule 2), log what it changed, and tell ``on_change``."""
        before = backend.health
        after = before.observe(ok, self.thresholds)
        backend.health = after
        if error is not None:
            backend.last_error = error
        elif ok:
            backend.last_error = None
        engine, limits = backend.engine_id, self.thresholds
        if after.healthy and not before.healthy:
            log.info("backend %s is healthy", engine)
        elif before.healthy and not after.healthy:
            log.warning(
                "backend %s leaves the pool after %d consecutive failures: %s", engine, after.failures, error
            )
        elif after.healthy and not ok:
            log.info(
                "backend %s: %s failed (%d of %d before it leaves the pool): %s",
                engine,
                source,
                after.failures,
                limits.failures,
                error,
            )
        elif after.admitted and ok and not after.healthy:
            log.info(
                "backend %s: %s passed (%d of %d before it returns)",
                engine,
                source,
                after.successes,
                limits.successes,
            )
        self._on_change(backend)

    def add(self, engine_id: str, url: str, source: str) -> Backend:
        """Rule 6: a new backend, out of the pool until its first passing check; ValueError if the id
        is taken."""
        if engine_id in self.by_id:
            raise ValueError(f"a backend named {engine_id!r} exists")
        backend = Backend(engine_id, url, source=source)
        self.backends = [*self.backends, backend]
        self.by_id = {**self.by_id, engine_id: backend}
        log.info("backend %s added (%s, %s)", engine_id, url, source)
        return backend

    def remove(self, engine_id: str) -> Backend | None:
        """Rule 6: take a backend out for good; its calls in flight finish."""
        backend = self.by_id.get(engine_id)
        if backend is None:
            return None
        self.backends = [b for b in self.backends if b is not backend]
        self.by_id = {b.engine_id: b for b in self.backends}
        log.info("backend %s removed (%s, %d call(s) in flight finish)", engine_id, backend.source,
                 backend.in_flight)  # fmt: skip
        self._on_remove(backend)
        return backend

    def of_source(self, source: str) -> dict[str, str]:
        """id → URL of one source's backends (discovery.py rule 1)."""
        return {b.engine_id: b.url for b in self.backends if b.source == source}

    def record_call_failure(self, engine_id: str, reason: str) -> None:
        """A call could not connect to the backend: one failure, as a failed check (rule 1)."""
        backend = self.by_id.get(engine_id)
        if backend is not None and backend.health.admitted:
            self.observe(backend, False, reason, "a call")

    async def _get(self, url: str) -> tuple[int, bytes]:
        reply = await self._transport.send(UpstreamRequest("GET", url, timeout=self._timeout))
        try:
            data = await reply.read()
        except BaseException:
            reply.close()
            raise
        reply.release()
        return reply.status, data

    async def check(self, backend: Backend) -> None:
        try:
            # A sidecar's /ready fails while its engine is down (its /health only says the sidecar
            # lives); engines without /ready (vLLM, SGLang) answer 404 and are asked /health instead.
            path = backend.health_path
            status, _ = await self._get(backend.url + path)
            if status == 404 and path == "/ready":
                backend.health_path = path = "/health"
                status, _ = await self._get(backend.url + path)
            ok = 200 <= status < 300
            error = None if ok else f"{path} answered {status}"
        except TransportError as exc:
            timed_out = (isinstance(exc, UpstreamUnavailable) and exc.kind == "timeout") or (
                isinstance(exc, UpstreamBroken) and exc.timed_out
            )
            reason = exc.reason if isinstance(exc, UpstreamUnavailable) else str(exc)
            ok, error = False, f"no answer within {self._timeout} s" if timed_out else reason
        if ok and (not backend.models or backend.checks % self._models_every == 0):
            await self._read_models(backend)
        backend.checks += 1
        self.observe(backend, ok, error)

    async def _read_models(self, backend: Backend) -> None:
        try:
            status, raw = await self._get(backend.url + "/v1/models")
            if status != 200:
                return
            data = json.loads(raw)
        except (TransportError, ValueError):
            return
        cards = data.get("data") if isinstance(data, dict) else None
        if isinstance(cards, list):
            backend.models = {
                card["id"]: card
                for card in cards
                if isinstance(card, dict) and isinstance(card.get("id"), str)
            }

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(backend) for backend in self.backends))

    async def check_new(self, backend: Backend) -> None:
        """Rule 6: the first check of an added backend (unless it was removed meanwhile)."""
        if self.by_id.get(backend.engine_id) is backend:
            with contextlib.suppress(Exception):
                await self.check(backend)

    async def run(self) -> None:
        """Check forever (a task the app owns and cancels at shutdown)."""
        while True:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(Exception):
                await self.check_all()

    def known_models(self) -> set[str]:
        models: set[str] = set()
        for backend in self.backends:
            models.update(backend.models)
        return models

    def serving(self, model: str | None) -> list[Backend] | None:
        """Rule 3: the backends a call for ``model`` may use, in fleet order; None if it is unknown."""
        if model is None:
            return list(self.backends)
        serving = [backend for backend in self.backends if model in backend.models]
        if serving:
            return serving
        if not self.known_models():
            return list(self.backends)
        return None

    def model_cards(self) -> list[dict[str, Any]]:
        """The union of the backends' model cards (first backend's card wins), for ``GET /v1/models``."""
        cards: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            for model, card in backend.models.items():
                cards.setdefault(model, card)
        return [cards[model] for model in sorted(cards)]

    @property
    def any_healthy(self) -> bool:
        return any(backend.healthy for backend in self.backends)
