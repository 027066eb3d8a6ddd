"""``least_used``: the engine with the fewest outstanding calls (the paper's baseline balancer).

Theory of operation: one ``load`` scorer (min-max normalised outstanding calls, lowest = 1) over the
healthy engines; ties go to the engine listed first. Outstanding counts come from the program table,
which refreshes a proxy replica's view with every call start, so replicas agree closely without
talking to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, least_load
from .policy import RoutingPolicy
from .registry import register_router

_SCORERS = ("load",)


@register_router("least_used")
class LeastUsedRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        pass

    default_weights = MappingProxyType({"load": 1.0})

    params: Params

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        return decide(ids, _SCORERS, (least_load(candidates),), (1.0,), "fewest outstanding calls")
