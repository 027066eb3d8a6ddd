"""``residency``: every call of a program goes where its history lives; new programs go where the
working set has room (issue 14, item 2; Autellix Alg. 2 extended to the KV working-set gate).

Theory of operation
-------------------
The paper's balancer sends calls of up to 2048 input tokens to the least-used engine, because short
prompts hit shared system prompts anywhere. A program's history, though, lives on one engine only,
and with the working-set gate (engine_adapters/scheduling/working_set.py) the sidecars keep the
histories of their resident programs in the cache on purpose: a chat's second turn sent to another
engine recomputes its first, and enters that engine's gate as a new program whose history evicts
someone else's. So:

1. A program with a home (its pin) sends every call there, short or long, while the home is healthy.
2. A program without a home goes to the engine with the lowest load, where load is the outstanding
   calls (normalised by the fleet's largest count) plus ``resident_weight`` times the share of the KV
   cache the sidecar's resident programs take (``EngineView.resident``, reported by the sidecars):
   the engine whose working set has the most room, not merely the one with the fewest calls. The
   decision pins the program there (``pin``); the program table resolves pins atomically.
3. A home that is unhealthy or gone: the lowest-load healthy engine, without re-pinning (pins never
   move), and the reason says so.

Ties go to the engine listed first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, least_resident, one_hot
from .policy import RoutingPolicy
from .registry import register_router

_SCORERS = ("home", "load")


@register_router("residency")
class ResidencyRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        resident_weight: float = 1.0  # weight of the resident KV share beside the outstanding calls

        def __post_init__(self) -> None:
            if not (math.isfinite(self.resident_weight) and self.resident_weight >= 0):
                raise ValueError(f"resident_weight must be a finite number >= 0, got {self.resident_weight}")

    default_weights = MappingProxyType({"home": 2.0, "load": 1.0})

    params: Params

    def setup(self) -> None:
        self.require_heavier("home", "load", "load could move a program away from its history")
        self._weights = (self.weights["home"], self.weights["load"])

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        home = request.pinned_engine
        columns = (one_hot(ids, home), least_resident(candidates, self.params.resident_weight))
        if home is None:
            return decide(
                ids, _SCORERS, columns, self._weights, "new program: most working-set room", pin=True
            )
        if home in ids:
            return decide(ids, _SCORERS, columns, self._weights, "the program's home engine")
        reason = f"home engine {home} is unavailable: most working-set room, pin kept"
        return decide(ids, _SCORERS, columns, self._weights, reason)
