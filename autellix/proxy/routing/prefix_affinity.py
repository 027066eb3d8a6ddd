"""``prefix_affinity``: send a prompt where its prefix is likely cached, unless load is out of balance.

Theory of operation (after SGLang's cache-aware router policy; its current defaults)
-------------------------------------------------------------------------------------
The policy keeps a :class:`~.prefix_index.PrefixIndex`: an approximate tree of the prompts it routed
to each engine. Three scorers are computed over the healthy engines: ``prefix`` (the fraction of the
prompt's full blocks that engine holds), ``load`` (fewest outstanding calls) and ``tree`` (smallest
tree, i.e. the most room for new prefixes). Exactly one of them decides, by these rules in order:

1. Imbalance: if ``max_load - min_load > balance_abs_threshold`` and
   ``max_load > balance_rel_threshold * min_load`` (outstanding calls), the least-used engine.
2. Cache hit: if the best prefix match is positive and >= ``cache_threshold``, the engine with the
   best match (ties: less load, then fleet order).
3. Otherwise the engine with the smallest tree (ties: less load, then fleet order), which spreads new
   prefixes over the fleet.

Whatever the rule, the chosen engine's tree then records the prompt. Engines absent from the fleet
view are forgotten (unhealthy ones are kept: their cache may survive a blip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .base import EngineView, RouteDecision, RouteRequest
from .pipeline import candidate_ids, decide, healthy_only, lower_is_better
from .policy import RoutingPolicy
from .prefix_index import PrefixIndex
from .registry import register_router

_SCORERS = ("prefix", "load", "tree")


@register_router("prefix_affinity")
class PrefixAffinityRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        cache_threshold: float = 0.3  # minimum prefix-match fraction for the cache rule
        balance_abs_threshold: int = 64  # outstanding-call spread beyond which load wins ...
        balance_rel_threshold: float = 1.5  # ... if the busiest also has this many times the least's load
        block_chars: int = 128  # text block: ~32 tokens, two engine cache blocks (halves hashing)
        block_tokens: int = 16
        max_blocks_per_engine: int = 16384  # 262k tokens as ids: the order of one engine's KV capacity

        def __post_init__(self) -> None:
            if not 0.0 <= self.cache_threshold <= 1.0:
                raise ValueError(f"cache_threshold must be within [0, 1], got {self.cache_threshold}")
            if self.balance_abs_threshold < 0 or self.balance_rel_threshold < 1.0:
                raise ValueError("balance_abs_threshold must be >= 0 and balance_rel_threshold >= 1")
            if min(self.block_chars, self.block_tokens, self.max_blocks_per_engine) < 1:
                raise ValueError("block_chars, block_tokens and max_blocks_per_engine must be >= 1")

    params: Params

    def setup(self) -> None:
        self.index = PrefixIndex(
            block_chars=self.params.block_chars,
            block_tokens=self.params.block_tokens,
            max_blocks_per_engine=self.params.max_blocks_per_engine,
        )

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        keys = self.index.block_keys(request.prefix)
        depths = self.index.match(keys) if keys else {}
        match = self._match_column(ids, depths, len(keys))
        outstanding = [engine.outstanding for engine in candidates]
        most, least = max(outstanding), min(outstanding)
        load = (
            [(most - count) / (most - least) for count in outstanding] if most > least else [1.0] * len(ids)
        )
        tree = lower_is_better(self.index.sizes(ids))
        columns = (match, load, tree)
        best = max(match)
        p = self.params
        if most - least > p.balance_abs_threshold and most > p.balance_rel_threshold * least:
            reason = f"load imbalanced ({least}..{most} outstanding): least-used engine"
            decision = decide(ids, _SCORERS, columns, (0.0, 1.0, 0.0), reason)
        elif best > 0.0 and best >= p.cache_threshold:
            reason = f"prefix match {best:.2f} >= {p.cache_threshold}: best-matching engine"
            decision = decide(ids, _SCORERS, columns, (1.0, 0.0, 0.0), reason, tiebreak=load)
        else:
            reason = f"prefix match {best:.2f} < {p.cache_threshold}: engine with the smallest tree"
            decision = decide(ids, _SCORERS, columns, (0.0, 0.0, 1.0), reason, tiebreak=load)
        if keys:
            self.index.insert(decision.engine_id, keys)
            self.index.prune(engines)
        return decision

    @staticmethod
    def _match_column(ids: list[str], depths: dict[str, int], blocks: int) -> list[float]:
        if len(depths) > 8:
            return [depths.get(engine_id, 0) / blocks for engine_id in ids]
        # few holders (the usual case): place them instead of probing every engine
        column = [0.0] * len(ids)
        for engine_id, depth in depths.items():
            if engine_id in ids:
                column[ids.index(engine_id)] = depth / blocks
        return column
