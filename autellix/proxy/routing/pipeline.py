"""Filters → weighted scorers → picker: the parts every routing policy is assembled from.

Theory of operation (the llm-d endpoint picker's pipeline, STYLE.md)
--------------------------------------------------------------------
1. A filter narrows the candidates. :func:`healthy_only` is the one every policy applies first; it
   raises :class:`~.base.NoEngineAvailable` when nothing is left. Candidates keep fleet order.
2. A scorer maps the candidates to a column of scores in [0, 1], one per candidate, higher = better.
   Scorers are independent of each other; none of them reads state outside its arguments.
3. A candidate's total is ``sum(weight * score)`` over the scorers. The picker takes the highest
   total; among equal totals the higher tie-break score wins when the policy supplies one, then the
   candidate listed first. So no decision ever depends on dict order, hashing or chance.
4. :func:`decide` runs 3 and records the reason, the totals and every column in the decision.

The functions work on lists aligned with the candidate list rather than on per-engine objects: a
decision over 64 engines then costs a few list comprehensions, well under the 20 µs budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EngineView, NoEngineAvailable, RouteDecision


def healthy_only(engines: Sequence[EngineView]) -> list[EngineView]:
    """Filter: the healthy engines, in fleet order."""
    candidates = [engine for engine in engines if engine.healthy]
    if not candidates:
        if not engines:
            raise NoEngineAvailable("no engines are configured")
        raise NoEngineAvailable(f"none of the {len(engines)} engines is healthy")
    return candidates


def candidate_ids(candidates: Sequence[EngineView]) -> list[str]:
    ids = [engine.engine_id for engine in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError(f"engine ids must be unique, got {ids}")
    return ids


def lower_is_better(values: Sequence[float]) -> list[float]:
    """Min-max normalised so the lowest value scores 1 and the highest 0; all equal → all 1."""
    low = min(values)
    high = max(values)
    if high == low:
        return [1.0] * len(values)
    span = high - low
    return [(high - value) / span for value in values]


def least_load(candidates: Sequence[EngineView]) -> list[float]:
    """Scorer ``load``: fewest outstanding calls (the paper's least-used engine) scores 1."""
    return lower_is_better([engine.outstanding for engine in candidates])


def least_resident(candidates: Sequence[EngineView], weight: float = 1.0) -> list[float]:
    """Scorer ``load`` with the working set: outstanding calls normalised by the fleet's largest count,
    plus ``weight`` x the resident share of the KV cache each sidecar reports (unreported counts as
    0); the lowest sum scores 1."""
    most = max((engine.outstanding for engine in candidates), default=0) or 1
    return lower_is_better(
        [engine.outstanding / most + weight * (engine.resident or 0.0) for engine in candidates]
    )


def fewest_waiting(candidates: Sequence[EngineView]) -> list[float]:
    """Scorer ``waiting``: the engine-reported queue length; an engine that reports none counts as 0."""
    return lower_is_better([engine.waiting or 0 for engine in candidates])


def kv_headroom(candidates: Sequence[EngineView]) -> list[float]:
    """Scorer ``kv_usage``: free KV-cache fraction, absolute (1 - usage); unreported counts as empty."""
    return [1.0 - min(1.0, max(0.0, engine.kv_usage or 0.0)) for engine in candidates]


def one_hot(ids: Sequence[str], engine_id: str | None) -> list[float]:
    """Scorer shape for affinities: 1 for the one engine, 0 for the others (all 0 when it is absent)."""
    return [1.0 if candidate == engine_id else 0.0 for candidate in ids]


def weighted_totals(columns: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    totals: list[float] | None = None
    for weight, column in zip(weights, columns, strict=True):
        if weight == 0.0:
            continue
        if totals is None:
            totals = list(column) if weight == 1.0 else [weight * score for score in column]
        else:
            totals = [total + weight * score for total, score in zip(totals, column, strict=True)]
    if totals is None:
        return [0.0] * (len(columns[0]) if columns else 0)
    return totals


def pick_highest(totals: Sequence[float], tiebreak: Sequence[float] | None = None) -> int:
    """Index of the highest total; ties → higher tie-break score → lower index."""
    best = max(totals)
    first = totals.index(best)  # the lowest index among equal totals
    if tiebreak is None or totals.count(best) == 1:
        return first
    # lexicographic (total, tie-break, -index) in one C-level pass
    return -max(zip(totals, tiebreak, range(0, -len(totals), -1), strict=True))[2]


def decide(
    ids: Sequence[str],
    scorer_names: tuple[str, ...],
    columns: Sequence[Sequence[float]],
    weights: Sequence[float],
    reason: str,
    *,
    pin: bool = False,
    tiebreak: Sequence[float] | None = None,
) -> RouteDecision:
    """Total the weighted columns, pick the best candidate, and record why."""
    totals = weighted_totals(columns, weights)
    chosen = pick_highest(totals, tiebreak)
    rows = tuple(zip(ids, totals, zip(*columns, strict=True), strict=True))
    return RouteDecision(
        engine_id=ids[chosen], reason=reason, scores=rows, scorer_names=scorer_names, pin=pin
    )
