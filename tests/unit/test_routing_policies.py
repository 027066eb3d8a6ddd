"""Table-driven tests of every routing policy: ``{name, router, engines, requests, expected}`` cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from autellix.proxy.routing import EngineView, RouteRequest, get_router


def fleet(
    *loads: int, down: Sequence[int] = (), kv: Sequence[float] = (), waiting: Sequence[int] = ()
) -> list[EngineView]:
    """Engines e0, e1, ... with the given outstanding calls; ``down`` lists unhealthy indexes."""
    return [
        EngineView(
            f"e{i}",
            healthy=i not in down,
            outstanding=load,
            kv_usage=kv[i] if kv else None,
            waiting=waiting[i] if waiting else None,
        )
        for i, load in enumerate(loads)
    ]


def call(
    tokens: int = 100, *, program: str = "p", pinned: str | None = None, prefix: str | tuple[int, ...] = ""
) -> RouteRequest:
    return RouteRequest(program, input_tokens=tokens, pinned_engine=pinned, prefix=prefix)


@dataclass(frozen=True)
class Case:
    name: str
    router: str | Mapping[str, Any]
    engines: list[EngineView]
    requests: list[RouteRequest]  # routed in order through one router instance
    expected: list[str]  # the engine of each decision
    pins: list[bool] = field(default_factory=list)  # the pin flag of each decision, when given
    reason: str = ""  # a fragment of the last decision's reason, when given


SYSTEM = "You are a careful assistant. " * 12  # 348 characters: 2 full blocks of 128
# 348 + 20 * 58 characters: 11 full blocks, of which the shared system prompt fills 2 (a 0.18 match)
HISTORY_A = SYSTEM + "user: plan a trip to Lisbon in May, with museums and food. " * 20
HISTORY_B = SYSTEM + "user: summarise the attached quarterly report in bullets.. " * 20

CASES = [
    # --- autellix (paper Alg. 2) ---------------------------------------------------------------
    Case("autellix short call: least used", "autellix", fleet(3, 0, 2), [call(100)], ["e1"], [False],
         "short call"),
    Case("autellix short call ignores the pin", "autellix", fleet(3, 0, 2), [call(2048, pinned="e2")], ["e1"],
         [False]),
    Case("autellix first long call pins the least used", "autellix", fleet(3, 1, 2), [call(2049)], ["e1"],
         [True], "pin to the least-used"),
    Case("autellix long call follows the pin, however loaded", "autellix", fleet(0, 1, 90),
         [call(5000, pinned="e2")], ["e2"], [False], "pinned engine"),
    Case("autellix pinned engine unhealthy: least used, no re-pin", "autellix", fleet(3, 1, 0, down=[2]),
         [call(5000, pinned="e2")], ["e1"], [False], "e2 is unavailable"),
    Case("autellix pinned engine gone: least used, no re-pin", "autellix", fleet(3, 1),
         [call(5000, pinned="e9")], ["e1"], [False], "e9 is unavailable"),
    Case("autellix threshold is a parameter", {"name": "autellix", "params": {"short_call_max_tokens": 100}},
         fleet(0, 5), [call(101, pinned="e1"), call(100, pinned="e1")], ["e1", "e0"], [False, False]),
    Case("autellix ties go to the engine listed first", "autellix", fleet(2, 1, 1), [call(10)], ["e1"]),
    # --- least_used ----------------------------------------------------------------------------
    Case("least_used picks the fewest outstanding", "least_used", fleet(4, 2, 7), [call()], ["e1"]),
    Case("least_used ties: first listed", "least_used", fleet(4, 1, 1), [call()], ["e1"]),
    Case("least_used skips unhealthy engines", "least_used", fleet(4, 0, 3, down=[1]), [call()], ["e2"]),
    # --- round_robin ---------------------------------------------------------------------------
    Case("round_robin cycles in fleet order", "round_robin", fleet(9, 0, 0), [call()] * 4,
         ["e0", "e1", "e2", "e0"]),
    Case("round_robin cycles over healthy engines", "round_robin", fleet(0, 0, 0, down=[1]), [call()] * 3,
         ["e0", "e2", "e0"]),
    # --- power_of_two --------------------------------------------------------------------------
    Case("power_of_two with two engines: the less loaded", "power_of_two", fleet(5, 1), [call()] * 3,
         ["e1", "e1", "e1"]),
    Case("power_of_two with one healthy engine", "power_of_two", fleet(0, 3, down=[0]), [call()], ["e1"]),
    # --- session_affinity ----------------------------------------------------------------------
    Case("session_affinity ignores load and input size", "session_affinity", fleet(0, 0, 0, 0),
         [call(10, program="alpha"), call(9000, program="alpha")], ["e1", "e1"]),  # e1 owns "alpha"
    # --- prefix_affinity -----------------------------------------------------------------------
    Case("prefix_affinity cold prompt: smallest tree, then least used", "prefix_affinity", fleet(3, 1, 2),
         [call(prefix=HISTORY_A)], ["e1"], reason="smallest tree"),
    Case("prefix_affinity repeats follow the cache despite load", "prefix_affinity", fleet(3, 1, 2),
         [call(prefix=HISTORY_A), call(prefix=HISTORY_A + "assistant: sure")], ["e1", "e1"],
         reason="best-matching engine"),
    Case("prefix_affinity new prompt goes to an empty tree", "prefix_affinity", fleet(1, 0, 2),
         [call(prefix=HISTORY_A), call(prefix="x" * 700)], ["e1", "e0"]),
    Case("prefix_affinity shared system prompt alone is below the threshold", "prefix_affinity",
         fleet(1, 0, 2), [call(prefix=HISTORY_A), call(prefix=HISTORY_B)], ["e1", "e0"], reason="< 0.3"),
    Case("prefix_affinity works on token ids", "prefix_affinity", fleet(1, 0),
         [call(prefix=tuple(range(64))), call(prefix=tuple(range(80)))], ["e1", "e1"]),
    Case("prefix_affinity partial block is no prefix", "prefix_affinity", fleet(1, 0),
         [call(prefix="short prompt"), call(prefix="short prompt")], ["e1", "e1"], reason="0.00 < 0.3"),
    # --- weighted ------------------------------------------------------------------------------
    Case("weighted defaults to least used", "weighted", fleet(2, 0, 1), [call()], ["e1"], reason="1*load"),
    Case("weighted kv headroom", {"name": "weighted", "weights": {"load": 0, "kv_usage": 1}},
         fleet(0, 5, 5, kv=[0.9, 0.2, 0.5]), [call()], ["e1"]),
    Case("weighted waiting queue", {"name": "weighted", "weights": {"load": 0, "waiting": 1}},
         fleet(0, 0, 0, waiting=[8, 9, 1]), [call()], ["e2"]),
    Case("weighted pinned outweighs load", {"name": "weighted", "weights": {"load": 1, "pinned": 2}},
         fleet(0, 9), [call(pinned="e1")], ["e1"], [False]),
    Case("weighted load outweighs pinned", {"name": "weighted", "weights": {"load": 2, "pinned": 1}},
         fleet(0, 9), [call(pinned="e1")], ["e0"]),
    Case("weighted prefix keeps a conversation together",
         {"name": "weighted", "weights": {"load": 0.5, "prefix": 1}}, fleet(0, 0),
         [call(prefix=HISTORY_A), call(prefix=HISTORY_B), call(prefix=HISTORY_A + " more")],
         ["e0", "e0", "e0"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_routing_case(case: Case) -> None:
    router = get_router(case.router)
    decisions = [router.route(request, case.engines) for request in case.requests]
    assert [d.engine_id for d in decisions] == case.expected
    if case.pins:
        assert [d.pin for d in decisions] == case.pins
    assert case.reason in decisions[-1].reason


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ((70, 5), "e1"),  # 70 - 5 > 64 and 70 > 1.5 * 5: imbalanced, least used despite the cache
        ((90, 40), "e0"),  # 90 - 40 <= 64: balanced enough, the cache wins
        ((600, 500), "e0"),  # 100 > 64 but 600 <= 1.5 * 500: both thresholds must be exceeded
        ((64, 0), "e0"),  # exactly the absolute threshold is not beyond it
        ((65, 0), "e1"),
    ],
)
def test_prefix_affinity_imbalance_overrides_the_cache(loads: tuple[int, int], expected: str) -> None:
    router = get_router("prefix_affinity")
    assert router.route(call(prefix=HISTORY_A), fleet(0, 5)).engine_id == "e0"
    decision = router.route(call(prefix=HISTORY_A), fleet(*loads))
    assert decision.engine_id == expected
    assert ("imbalanced" in decision.reason) == (expected == "e1")


def test_prefix_affinity_skips_an_unhealthy_cached_engine() -> None:
    router = get_router("prefix_affinity")
    assert router.route(call(prefix=HISTORY_A), fleet(0, 1)).engine_id == "e0"
    decision = router.route(call(prefix=HISTORY_A), fleet(0, 1, 2, down=[0]))
    assert decision.engine_id == "e1"
    assert [row[0] for row in decision.scores] == ["e1", "e2"]


def test_prefix_affinity_records_match_load_and_tree_scores() -> None:
    router = get_router("prefix_affinity")
    router.route(call(prefix=HISTORY_A), fleet(0, 4))
    decision = router.route(call(prefix=HISTORY_A[:300]), fleet(0, 4))  # its first 2 blocks
    assert decision.scorer_names == ("prefix", "load", "tree")
    assert decision.scores_of("e0") == {"total": 1.0, "prefix": 1.0, "load": 1.0, "tree": 0.0}
    assert decision.scores_of("e1") == {"total": 0.0, "prefix": 0.0, "load": 0.0, "tree": 1.0}


def test_autellix_decision_records_pinned_and_load_scores() -> None:
    decision = get_router("autellix").route(call(5000, pinned="e1"), fleet(0, 4, 2))
    assert decision.scorer_names == ("pinned", "load")
    assert decision.scores == (("e0", 1.0, (0.0, 1.0)), ("e1", 2.0, (1.0, 0.0)), ("e2", 0.5, (0.0, 0.5)))
    assert decision.scores_of("e9") is None


def test_power_of_two_only_scores_the_two_sampled_engines() -> None:
    decision = get_router("power_of_two").route(call(), fleet(*range(10)))
    assert len(decision.scores) == 2
    first, second = (row[0] for row in decision.scores)
    assert decision.engine_id == min(first, second, key=lambda e: int(e[1:]))  # less loaded of the pair


def test_random_uses_every_engine_and_its_seed() -> None:
    engines = fleet(0, 0, 0, 0)
    picks = [
        get_router({"name": "random", "params": {"seed": 3}}).route(call(), engines).engine_id
        for _ in range(3)
    ]
    assert len(set(picks)) == 1  # a fresh router with one seed repeats its first draw
    router = get_router("random")
    counts = {e.engine_id: 0 for e in engines}
    for _ in range(400):
        counts[router.route(call(), engines).engine_id] += 1
    assert all(60 < n < 140 for n in counts.values()), counts


def test_session_affinity_spreads_programs_and_follows_the_ring_owner() -> None:
    router = get_router("session_affinity")
    engines = fleet(0, 0, 0, 0)
    owners = [router.route(call(program=f"prog-{i}"), engines).engine_id for i in range(400)]
    shares = {engine: owners.count(engine) for engine in set(owners)}
    assert len(shares) == 4 and all(50 < n < 150 for n in shares.values()), shares
    weighted = get_router({"name": "weighted", "weights": {"load": 0, "session": 1}})
    assert [weighted.route(call(program=f"prog-{i}"), engines).engine_id for i in range(400)] == owners
