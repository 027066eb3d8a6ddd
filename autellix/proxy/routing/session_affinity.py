"""``session_affinity``: every call of a program goes to the engine that owns the program on a hash ring.

Theory of operation: a consistent-hash ring (:mod:`.hash_ring`) over the healthy engines, keyed by the
program id. The owner gets the ``session`` score 1, the rest 0. The ring depends only on engine ids,
so all proxy replicas agree without shared state; when an engine turns unhealthy only its programs
move (to their next owner on the ring), and they come back when it recovers. Load is ignored: this is
the sticky baseline the paper's locality balancer is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .base import EngineView, RouteDecision, RouteRequest
from .hash_ring import HashRing
from .pipeline import candidate_ids, decide, healthy_only, one_hot
from .policy import RoutingPolicy
from .registry import register_router

_SCORERS = ("session",)


@register_router("session_affinity")
class SessionAffinityRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        vnodes: int = 100  # points per engine on the ring: more = evener shares, slower rebuilds

        def __post_init__(self) -> None:
            if self.vnodes < 1:
                raise ValueError(f"vnodes must be >= 1, got {self.vnodes}")

    params: Params

    def setup(self) -> None:
        self.ring = HashRing(self.params.vnodes)

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        ids = candidate_ids(healthy_only(engines))
        owner = self.ring.owner(request.program_id, ids)
        return decide(ids, _SCORERS, (one_hot(ids, owner),), (1.0,), "owner of the program on the hash ring")
