"""Property tests of the routers (hypothesis): health, determinism, and the paper's pins."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.programs import CallFinish, CallStart, MemoryProgramTable
from autellix.proxy.routing import EngineView, NoEngineAvailable, RouteRequest, get_router, router_names

engine_views = st.lists(st.tuples(st.booleans(), st.integers(0, 200)), min_size=1, max_size=9).map(
    lambda specs: [EngineView(f"e{i}", healthy=ok, outstanding=load) for i, (ok, load) in enumerate(specs)]
)
requests = st.builds(
    RouteRequest,
    program_id=st.sampled_from(["a", "b", "c", "d"]),
    thread_id=st.sampled_from([None, "t1"]),
    input_tokens=st.sampled_from([0, 100, 2048, 2049, 30000]),
    prefix=st.sampled_from(["", "sys " * 40, "sys " * 40 + "question one " * 10, "other " * 30]),
    pinned_engine=st.sampled_from([None, "e0", "e1", "e5", "e20"]),
    now=st.floats(min_value=0.0, max_value=1e6),
)
steps = st.lists(st.tuples(requests, engine_views), min_size=1, max_size=15)


@pytest.mark.parametrize("name", router_names())
@settings(max_examples=40, deadline=None)
@given(steps=steps, seed=st.integers(0, 2**32 - 1))
def test_never_an_unhealthy_engine_and_same_inputs_same_decisions(
    name: str, steps: list[tuple[RouteRequest, list[EngineView]]], seed: int
) -> None:
    first = get_router(name, rng=random.Random(seed))
    second = get_router(name, rng=random.Random(seed))
    for request, engines in steps:
        healthy = {e.engine_id for e in engines if e.healthy}
        if not healthy:
            with pytest.raises(NoEngineAvailable):
                first.route(request, engines)
            continue
        decision = first.route(request, engines)
        assert decision.engine_id in healthy
        assert second.route(request, engines) == decision


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["p0", "p1", "p2"]),
            st.sampled_from([10, 2048, 2049, 8000]),
            st.integers(0, 1),  # which proxy replica routes the call
            st.lists(st.integers(0, 50), min_size=4, max_size=4),  # that replica's (stale) load view
            st.booleans(),  # finish the call right away
        ),
        max_size=40,
    )
)
def test_autellix_long_calls_of_a_program_stay_on_its_pinned_engine(
    calls: list[tuple[str, int, int, list[int], bool]],
) -> None:
    """Two replicas with their own stale views share one program table: pins still never move."""
    table = MemoryProgramTable()
    replicas = [get_router("autellix"), get_router("autellix")]
    long_engines: dict[str, set[str]] = {}
    for n, (program, tokens, replica, loads, done) in enumerate(calls):
        engines = [EngineView(f"e{i}", outstanding=load) for i, load in enumerate(loads)]
        # replica 1 never re-reads the pin, as if its cache were stale: the table must resolve it
        state = table.get(program) if replica == 0 else None
        request = RouteRequest(
            program, input_tokens=tokens, pinned_engine=state.pinned_engine if state else None
        )
        decision = replicas[replica].route(request, engines)
        result = table.start_call(
            CallStart(program, f"c{n}", decision.engine_id, pin=decision.pin), now=float(n)
        )
        if tokens > 2048:
            long_engines.setdefault(program, set()).add(result.engine_id)
            assert result.engine_id == result.pinned_engine
        if done:
            table.finish_call(CallFinish(program, f"c{n}", exec_time=1.0), now=n + 0.5)
    assert all(len(engines) == 1 for engines in long_engines.values()), long_engines


@settings(max_examples=80, deadline=None)
@given(loads=st.lists(st.integers(0, 100), min_size=2, max_size=12, unique=True), seed=st.integers(0, 1000))
def test_power_of_two_never_picks_the_most_loaded_engine(loads: list[int], seed: int) -> None:
    router = get_router({"name": "power_of_two", "params": {"seed": seed}})
    engines = [EngineView(f"e{i}", outstanding=load) for i, load in enumerate(loads)]
    busiest = f"e{loads.index(max(loads))}"
    for _ in range(10):
        assert router.route(RouteRequest("p"), engines).engine_id != busiest
