"""``round_robin``: the healthy engines in turn.

Theory of operation: the policy keeps one counter. Each decision takes the healthy candidate at
``counter mod len(candidates)`` and advances the counter, so with a stable fleet every engine gets
every n-th call. When engines turn unhealthy the rotation continues over the remaining ones (the
counter is not reset, so no engine is favoured after a change). The ``turn`` score column marks the
engine whose turn it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, one_hot
from .policy import RoutingPolicy
from .registry import register_router

_SCORERS = ("turn",)


@register_router("round_robin")
class RoundRobinRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        pass

    params: Params

    def setup(self) -> None:
        self._counter = 0

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        ids = candidate_ids(healthy_only(engines))
        turn = ids[self._counter % len(ids)]
        self._counter += 1
        return decide(ids, _SCORERS, (one_hot(ids, turn),), (1.0,), "next healthy engine in turn")
