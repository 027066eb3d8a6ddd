"""The backend pool: which engines (or sidecars) exist, which are healthy, which models they serve.

Theory of operation
-------------------
1. Health: every ``interval`` seconds each backend gets ``GET /ready`` (``/health`` where ``/ready`` is
   404, as on vLLM and SGLang); a 2xx within ``timeout`` makes
   it healthy, anything else unhealthy. A connection failure seen by a real call marks it unhealthy at
   once (:meth:`BackendPool.mark_down`), so no further call waits for the next check; the next passing
   check brings it back. An unhealthy backend is offered to routers as ``healthy=False`` (never chosen).
2. Models: a healthy backend's ``GET /v1/models`` is read on its first passing check and then every
   ``models_every`` checks. The lists are kept while a backend is down (it will serve the same models
   when it returns), so a model is *known* once any backend has listed it.
3. A call for model M may go to the backends that list M. A model no backend lists is unknown (404),
   unless no backend has listed anything yet (then every backend is a candidate: the engines decide).
   A call without a model may go to any backend.
4. The first round of checks runs before the proxy starts serving, so ``/ready`` and the model lists
   are right from the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("autellix.proxy.backends")


@dataclass(slots=True)
class Backend:
    engine_id: str
    url: str
    healthy: bool = False
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model id → its card
    checks: int = 0
    last_error: str | None = None
    in_flight: int = 0  # this replica's calls on it
    health_path: str = "/ready"  # falls back to /health for backends that have no /ready


class BackendPool:
    def __init__(
        self,
        backends: Sequence[tuple[str, str]],
        session: aiohttp.ClientSession,
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        models_every: int = 5,
        on_change: Callable[[Backend], None] | None = None,
    ) -> None:
        self.backends = [Backend(engine_id, url) for engine_id, url in backends]
        self.by_id = {backend.engine_id: backend for backend in self.backends}
        self._session = session
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._models_every = max(1, models_every)
        self._on_change = on_change or (lambda backend: None)

    def _set_health(self, backend: Backend, healthy: bool, error: str | None) -> None:
        changed = backend.healthy != healthy
        backend.healthy = healthy
        backend.last_error = error
        if changed:
            if healthy:
                log.info("backend %s is healthy", backend.engine_id)
            else:
                log.warning("backend %s is unhealthy: %s", backend.engine_id, error)
        self._on_change(backend)

    def mark_down(self, engine_id: str, reason: str) -> None:
        backend = self.by_id.get(engine_id)
        if backend is not None and backend.healthy:
            self._set_health(backend, False, reason)

    async def check(self, backend: Backend) -> None:
        try:
            # A sidecar's /ready fails while its engine is down (its /health only says the sidecar
            # lives); engines without /ready (vLLM, SGLang) answer 404 and are asked /health instead.
            path = backend.health_path
            async with self._session.get(backend.url + path, timeout=self._timeout) as reply:
                await reply.read()
                status = reply.status
            if status == 404 and path == "/ready":
                backend.health_path = path = "/health"
                async with self._session.get(backend.url + path, timeout=self._timeout) as reply:
                    await reply.read()
                    status = reply.status
            ok = 200 <= status < 300
            error = None if ok else f"{path} answered {status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok and (not backend.models or backend.checks % self._models_every == 0):
            await self._read_models(backend)
        backend.checks += 1
        self._set_health(backend, ok, error)

    async def _read_models(self, backend: Backend) -> None:
        try:
            async with self._session.get(backend.url + "/v1/models", timeout=self._timeout) as reply:
                if reply.status != 200:
                    return
                data = await reply.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
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
