"""Routing's plain data: what a router sees (a request, a view of the engines) and what it decides.

Theory of operation (DESIGN.md §2; the shape follows the llm-d endpoint picker, STYLE.md)
-----------------------------------------------------------------------------------------
1. A router is an object with ``route(request, engines) -> RouteDecision``. It reads nothing else:
   no clock (``request.now`` is the time), no global randomness (a seeded ``random.Random`` is given
   to it), no IO. State a policy keeps (a round-robin counter, a prefix index, a hash ring) lives in
   the policy object, so one router instance is one deterministic state machine.
2. ``engines`` is the fleet in its configured order. That order is the tie-break of last resort:
   among equal totals the engine listed first wins. Engine ids must be unique (ValueError).
3. Unhealthy engines are never chosen. No healthy engine is :class:`NoEngineAvailable` (the proxy
   answers 503).
4. A decision records its reason and the scores that made it: one row per candidate that reached the
   scorers, ``(engine_id, total, (score per scorer, ...))``, with the scorer names alongside.
5. ``pin`` asks the program table to pin the program to the chosen engine. The table resolves pins
   atomically (an existing pin wins), so a router may ask on a stale view without harm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# (engine_id, total, per-scorer scores in the order of RouteDecision.scorer_names)
ScoreRow = tuple[str, float, tuple[float, ...]]


class NoEngineAvailable(RuntimeError):
    """No engine can take the call (none configured, or none healthy)."""


@dataclass(frozen=True, slots=True)
class EngineView:
    """One engine as the proxy sees it. Optional metrics are None when the engine does not report them."""

    engine_id: str
    healthy: bool = True
    outstanding: int = 0  # calls the program table has in flight on it (the paper's "usage")
    waiting: int | None = None  # engine-reported queue length (e.g. vllm:num_requests_waiting)
    running: int | None = None
    kv_usage: float | None = None  # fraction of KV cache in use, 0..1
    resident: float | None = None  # the sidecar's working set: resident programs' KV / cache (may pass 1)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One call to place. ``prefix`` is its prompt (text, or token ids) for prefix affinity."""

    program_id: str
    thread_id: str | None = None
    input_tokens: int = 0
    prefix: str | tuple[int, ...] = ""
    pinned_engine: str | None = None  # the program's pin as the proxy last read it
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class RouteDecision:
    engine_id: str
    reason: str
    scores: tuple[ScoreRow, ...]  # one row per scored candidate, in fleet order
    scorer_names: tuple[str, ...] = ()
    pin: bool = False  # ask the program table to pin the program to engine_id

    def scores_of(self, engine_id: str) -> dict[str, float] | None:
        """The row of one engine as ``{"total": ..., scorer: score, ...}``, or None if it was not scored."""
        for row_engine, total, parts in self.scores:
            if row_engine == engine_id:
                return {"total": total, **dict(zip(self.scorer_names, parts, strict=True))}
        return None


class Router(Protocol):
    @property
    def name(self) -> str: ...

    def route(self, request: RouteRequest, engines: Sequence[EngineView]) -> RouteDecision: ...
