"""Checks every registered router passes, found through the registry (a new policy gets them for free)."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest

from autellix.proxy.routing import (
    EngineView,
    NoEngineAvailable,
    RouteDecision,
    Router,
    RouteRequest,
    get_router,
    router_class,
    router_names,
)

ALL_ROUTERS = router_names()


def test_the_expected_routers_are_registered() -> None:
    expected = {"autellix", "least_used", "power_of_two", "prefix_affinity", "random", "round_robin"}
    assert expected | {"residency", "session_affinity", "weighted"} == set(ALL_ROUTERS)


def workload(seed: int, steps: int = 60) -> list[tuple[RouteRequest, list[EngineView]]]:
    """A reproducible mix of programs, call sizes, prompts, pins, loads and health flaps."""
    rng = random.Random(seed)
    out = []
    now = 1000.0
    for _ in range(steps):
        now += rng.expovariate(2.0)
        program = f"prog-{rng.randrange(8)}"
        engines = [
            EngineView(f"e{i}", healthy=rng.random() > 0.15 or i == 0, outstanding=rng.randrange(12))
            for i in range(5)
        ]
        prompt = f"system {program} " * rng.randrange(0, 60)
        request = RouteRequest(
            program,
            thread_id=rng.choice([None, "t1"]),
            input_tokens=rng.choice([50, 2048, 2049, 9000]),
            prefix=prompt,
            pinned_engine=rng.choice([None, "e1", "e3", "e9"]),
            now=now,
        )
        out.append((request, engines))
    return out


def run(router: Router, steps: list[tuple[RouteRequest, list[EngineView]]]) -> list[RouteDecision]:
    return [router.route(request, engines) for request, engines in steps]


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_router_is_deterministic(name: str) -> None:
    steps = workload(seed=1)
    assert run(get_router(name), steps) == run(get_router(name), steps)
    seeded = run(get_router(name, rng=random.Random(7)), steps)
    assert seeded == run(get_router(name, rng=random.Random(7)), steps)


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_no_engine_is_a_clear_error(name: str) -> None:
    router = get_router(name)
    with pytest.raises(NoEngineAvailable, match="no engines"):
        router.route(RouteRequest("p"), [])
    with pytest.raises(NoEngineAvailable, match="none of the 2 engines is healthy"):
        router.route(RouteRequest("p"), [EngineView("a", healthy=False), EngineView("b", healthy=False)])


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_one_engine_takes_every_call(name: str) -> None:
    router = get_router(name)
    for request, _ in workload(seed=2, steps=20):
        decision = router.route(request, [EngineView("only", outstanding=3)])
        assert decision.engine_id == "only"


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_unhealthy_engines_are_never_chosen_and_decisions_explain_themselves(name: str) -> None:
    router = get_router(name)
    for request, engines in workload(seed=3):
        decision = router.route(request, engines)
        healthy = [e.engine_id for e in engines if e.healthy]
        assert decision.engine_id in healthy
        rows = {row[0]: row for row in decision.scores}
        assert decision.engine_id in rows and set(rows) <= set(healthy)
        assert [row[0] for row in decision.scores] == [e for e in healthy if e in rows]  # fleet order
        assert rows[decision.engine_id][1] == max(row[1] for row in decision.scores)
        assert all(len(row[2]) == len(decision.scorer_names) for row in decision.scores)
        assert all(0.0 <= score <= 1.0 for row in decision.scores for score in row[2])
        assert decision.reason


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_router_follows_the_given_clock_only(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = workload(seed=4)
    shifted = [(dataclasses.replace(r, now=r.now + 1e6), engines) for r, engines in steps]
    expected = run(get_router(name), steps)

    def no_clock(*_args: object) -> float:
        raise AssertionError("a router read the wall clock")

    for clock in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "perf_counter_ns"):
        monkeypatch.setattr(time, clock, no_clock)
    decisions = run(get_router(name), shifted)
    monkeypatch.undo()
    assert decisions == expected  # only time differences could matter, and shifting changes none


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_decisions_are_frozen(name: str) -> None:
    decision = get_router(name).route(RouteRequest("p"), [EngineView("a")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.engine_id = "b"  # type: ignore[misc]


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_duplicate_engine_ids_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unique"):
        get_router(name).route(RouteRequest("p"), [EngineView("a"), EngineView("b"), EngineView("a")])


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_router_has_frozen_params_and_builds_from_config(name: str) -> None:
    cls = router_class(name)
    assert dataclasses.is_dataclass(cls.Params)
    router = get_router({"name": name, "params": {}, "weights": {}})
    assert router.name == name
    params = router.params
    assert isinstance(params, cls.Params)
    if dataclasses.fields(params):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(params, dataclasses.fields(params)[0].name, 1)
    with pytest.raises(ValueError, match="unknown parameter"):
        get_router({"name": name, "params": {"no_such_param": 1}})
