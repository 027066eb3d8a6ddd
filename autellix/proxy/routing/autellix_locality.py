"""``autellix``: the paper's locality-aware load balancer (Autellix Alg. 2, reference.md §1).

Theory of operation
-------------------
Calls of at most ``short_call_max_tokens`` input tokens (2048 in the paper) get >= 75% prefix-cache
hits on any engine (shared system prompts), so they only need the least-used engine. Longer prompts
are mostly the program's own history, which lives in the cache of the engine that served it, so they
follow the program. As llm-d would compose it: a ``pinned`` scorer (1 for the program's pinned engine)
plus a ``load`` scorer (fewest outstanding calls), weighed by the short-call rule:

1. Short call: weight 0 on ``pinned``; the least-used healthy engine wins.
2. Long call of a pinned program whose pinned engine is healthy: that engine. ``pinned`` must outweigh
   ``load`` (checked at construction), so the pinned engine wins whatever its load.
3. Long call of an unpinned program: the least-used engine, and the decision asks to pin (``pin``).
4. Long call whose pinned engine is unhealthy or gone: the least-used healthy engine, without
   re-pinning (pins never move), and the reason says so.

Ties go to the engine listed first. The pin itself is resolved atomically by the program table, which
sends the call to the existing pin if another replica pinned the program first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, least_load, one_hot
from .policy import RoutingPolicy
from .registry import register_router

_SCORERS = ("pinned", "load")


@register_router("autellix")
class AutellixRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        short_call_max_tokens: int = 2048  # the paper's threshold: calls up to this many input tokens

        def __post_init__(self) -> None:
            if self.short_call_max_tokens < 0:
                raise ValueError(f"short_call_max_tokens must be >= 0, got {self.short_call_max_tokens}")

    default_weights = MappingProxyType({"pinned": 2.0, "load": 1.0})

    params: Params

    def setup(self) -> None:
        self.require_heavier("pinned", "load", "load could move a pinned program's long calls")
        self._long_weights = (self.weights["pinned"], self.weights["load"])
        self._short_weights = (0.0, self.weights["load"])

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        pinned = request.pinned_engine
        columns = (one_hot(ids, pinned), least_load(candidates))
        limit = self.params.short_call_max_tokens
        if request.input_tokens <= limit:
            reason = f"short call ({request.input_tokens} <= {limit} tokens): least-used engine"
            return decide(ids, _SCORERS, columns, self._short_weights, reason)
        if pinned is None:
            reason = (
                f"first long call ({request.input_tokens} > {limit} tokens): pin to the least-used engine"
            )
            return decide(ids, _SCORERS, columns, self._long_weights, reason, pin=True)
        if pinned in ids:
            reason = f"long call ({request.input_tokens} > {limit} tokens): the program's pinned engine"
            return decide(ids, _SCORERS, columns, self._long_weights, reason)
        reason = f"long call, but pinned engine {pinned} is unavailable: least-used engine, pin kept"
        return decide(ids, _SCORERS, columns, self._long_weights, reason)
