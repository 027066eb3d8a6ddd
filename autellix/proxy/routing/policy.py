"""The base class of routing policies: configurable scorer weights and the policy's own seeded RNG.

A policy subclasses :class:`RoutingPolicy`, nests a frozen ``Params`` dataclass, lists the scorers it
weighs in ``default_weights`` and is registered with ``@register_router("name")`` (see
:mod:`.registry`). Config may override any listed weight and nothing else, so a typo in a weight's
name is an error rather than a silently ignored setting. The constructor is the base class's (params,
weights, and a generator seeded from ``params.seed`` when the policy has one); what a policy derives
from them it builds in ``setup``.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from .base import EngineView, RouteDecision, RouteRequest


class RoutingPolicy(ABC):
    name: ClassVar[str] = ""  # set by the registration decorator
    Params: ClassVar[type[Any]]  # each policy's frozen parameter dataclass
    default_weights: ClassVar[Mapping[str, float]] = MappingProxyType({})

    def __init__(
        self,
        params: Any = None,
        *,
        weights: Mapping[str, float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.params = params if params is not None else self.Params()
        self.weights: Mapping[str, float] = merge_weights(self.name, self.default_weights, weights)
        self.rng = rng if rng is not None else random.Random(getattr(self.params, "seed", 0))
        self.setup()

    def setup(self) -> None:  # noqa: B027 (a hook: most policies keep nothing derived)
        """Derive what the policy keeps from ``params`` and ``weights`` (checks, tables); none by default."""

    @abstractmethod
    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision:
        """Pick an engine for one call (see :mod:`.base` for the rules every policy keeps)."""

    def require_heavier(self, heavier: str, lighter: str, or_else: str) -> None:
        """Refuse weights under which scorer ``lighter`` could outvote ``heavier`` (a one-hot column
        outweighs a load column only when its weight is larger); ``or_else`` says what would go wrong."""
        if self.weights[heavier] <= self.weights[lighter]:
            raise ValueError(
                f"router {self.name!r}: weight {heavier!r} ({self.weights[heavier]}) must exceed weight "
                f"{lighter!r} ({self.weights[lighter]}), or {or_else}"
            )


class SeededPolicy(RoutingPolicy, ABC):
    """A policy whose only parameter is the seed of its own generator (used when no ``rng`` is given)."""

    @dataclass(frozen=True, slots=True)
    class Params:
        seed: int = 0

    params: Params


def merge_weights(
    policy: str, defaults: Mapping[str, float], overrides: Mapping[str, float] | None
) -> Mapping[str, float]:
    merged = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "(none: this router has no weighted scorers)"
            raise ValueError(f"router {policy!r}: unknown scorer weight {key!r}; valid: {valid}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"router {policy!r}: weight {key!r} must be a number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"router {policy!r}: weight {key!r} must be finite and >= 0, got {value!r}")
        merged[key] = float(value)
    return MappingProxyType(merged)
