"""``weighted``: a router composed by config, llm-d style: healthy filter → weighted scorers → picker.

Theory of operation
-------------------
Config names the scorers and their weights, e.g. ``{"name": "weighted", "weights": {"load": 1,
"kv_usage": 0.5, "prefix": 2}}``; the engine with the highest weighted sum wins (ties: fleet order).
Scorers with weight 0 are not computed. The scorers, each in [0, 1], higher = better:

- ``load``: fewest outstanding calls (min-max normalised);
- ``waiting``: shortest engine-reported queue (min-max normalised; unreported = 0);
- ``kv_usage``: free KV-cache fraction, ``1 - kv_usage`` (unreported = empty);
- ``pinned``: 1 for the program's pinned engine (never asks to pin: that is ``autellix``'s rule);
- ``session``: 1 for the program's owner on a consistent-hash ring (``vnodes`` points per engine);
- ``prefix``: fraction of the prompt's blocks in the engine's approximate prefix tree; the chosen
  engine's tree records the prompt.

Defaults: ``load`` 1, everything else 0, i.e. least-used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .base import EngineView, RouteDecision, RouteRequest
from .hash_ring import HashRing
from .pipeline import candidate_ids, decide, fewest_waiting, healthy_only, kv_headroom, least_load, one_hot
from .policy import RoutingPolicy
from .prefix_index import PrefixIndex
from .registry import register_router


@register_router("weighted")
class WeightedRouter(RoutingPolicy):
    @dataclass(frozen=True, slots=True)
    class Params:
        vnodes: int = 100  # session scorer
        block_chars: int = 128  # prefix scorer
        block_tokens: int = 16
        max_blocks_per_engine: int = 16384

        def __post_init__(self) -> None:
            if min(self.vnodes, self.block_chars, self.block_tokens, self.max_blocks_per_engine) < 1:
                raise ValueError("vnodes, block_chars, block_tokens and max_blocks_per_engine must be >= 1")

    default_weights = MappingProxyType(
        {"load": 1.0, "waiting": 0.0, "kv_usage": 0.0, "pinned": 0.0, "session": 0.0, "prefix": 0.0}
    )

    params: Params

    def setup(self) -> None:
        active = [(name, weight) for name, weight in self.weights.items() if weight > 0.0]
        if not active:
            raise ValueError(
                f"router 'weighted': at least one weight must be positive, got {dict(self.weights)}"
            )
        self._names = tuple(name for name, _ in active)
        self._weights = tuple(weight for _, weight in active)
        self.ring = HashRing(self.params.vnodes)
        self.index = PrefixIndex(
            block_chars=self.params.block_chars,
            block_tokens=self.params.block_tokens,
            max_blocks_per_engine=self.params.max_blocks_per_engine,
        )
        self._reason = "highest weighted score: " + " + ".join(
            f"{weight:g}*{name}" for name, weight in active
        )

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        candidates = healthy_only(engines)
        ids = candidate_ids(candidates)
        keys: list[int] = []
        columns: list[list[float]] = []
        for name in self._names:
            if name == "load":
                columns.append(least_load(candidates))
            elif name == "waiting":
                columns.append(fewest_waiting(candidates))
            elif name == "kv_usage":
                columns.append(kv_headroom(candidates))
            elif name == "pinned":
                columns.append(one_hot(ids, request.pinned_engine))
            elif name == "session":
                columns.append(one_hot(ids, self.ring.owner(request.program_id, ids)))
            else:
                keys = self.index.block_keys(request.prefix)
                depths = self.index.match(keys) if keys else {}
                columns.append([depths.get(engine_id, 0) / len(keys) if keys else 0.0 for engine_id in ids])
        decision = decide(ids, self._names, columns, self._weights, self._reason)
        if keys:
            self.index.insert(decision.engine_id, keys)
            self.index.prune(engines)
        return decision
