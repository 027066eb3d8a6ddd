"""``power_of_two``: the less loaded of two random healthy engines ("power of two choices").

Theory of operation: a sampling filter draws two distinct candidates with the policy's seeded
generator (one candidate: that one), then the ``load`` scorer (fewest outstanding calls) picks
between them; a tie goes to the one listed first in the fleet. Only the two sampled engines appear in
the decision's scores. Two choices avoid the herd effect of always picking the global minimum from a
stale view while keeping the maximum load close to least-used's.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, least_load
from .policy import SeededPolicy
from .registry import register_router

_SCORERS = ("load",)


@register_router("power_of_two")
class PowerOfTwoRouter(SeededPolicy):
    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        if len(candidates) > 2:
            first, second = sorted(self.rng.sample(range(len(candidates)), 2))
            candidates = [candidates[first], candidates[second]]
            ids = [ids[first], ids[second]]
        return decide(ids, _SCORERS, (least_load(candidates),), (1.0,), "less loaded of two random engines")
