"""``random``: a uniformly random healthy engine, from the policy's own seeded generator.

Theory of operation: ``rng.randrange(len(candidates))`` per decision. The generator is the one given
to the constructor, or ``random.Random(params.seed)``, never the module-level one, so a run is
reproducible from its seed and two routers never share a stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, one_hot
from .policy import SeededPolicy
from .registry import register_router

_SCORERS = ("draw",)


@register_router("random")
class RandomRouter(SeededPolicy):
    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        ids = candidate_ids(healthy_only(engines))
        drawn = ids[self.rng.randrange(len(ids))]
        return decide(ids, _SCORERS, (one_hot(ids, drawn),), (1.0,), "uniform random draw")
