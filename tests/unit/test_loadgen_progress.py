"""Pure parts of the live load generator: DAG bookkeeping and workload parameters (no processes, no IO)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.loadgen.live_config import LoadgenSettings, params_from_mapping, workload_params
from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.runner import ProgramProgress
from autellix.loadgen.workloads import lats, mixed, sharegpt


def dag(parents: list[tuple[int, ...]]) -> ProgramSpec:
    calls = tuple(CallSpec(i, (0,), 1, parents=p) for i, p in enumerate(parents))
    return ProgramSpec("p", "custom", 0.0, (Message("user", "x"),), calls)


@st.composite
def random_dags(draw: st.DrawFn) -> ProgramSpec:
    n = draw(st.integers(1, 12))
    parents = [tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))) if i else () for i in range(n)]
    return dag(parents)


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.randoms(use_true_random=False))
def test_every_call_is_released_once_and_only_after_all_its_parents(program: ProgramSpec, rng: random.Random):
    progress = ProgramProgress(program)
    ready = list(progress.roots())
    released = set(ready)
    finished: set[int] = set()
    while ready:
        index = ready.pop(rng.randrange(len(ready)))  # any order a live run could produce
        finished.add(index)
        for child in progress.finish(index):
            assert child not in released
            assert set(program.calls[child].parents) <= finished
            released.add(child)
            ready.append(child)
    assert released == finished == set(range(program.num_calls))
    assert progress.done


def test_finishing_a_call_twice_is_an_error():
    progress = ProgramProgress(dag([(), (0,)]))
    progress.finish(0)
    with pytest.raises(ValueError, match="twice"):
        progress.finish(0)


def test_nested_workload_params_and_the_sharegpt_cap():
    params = workload_params("mixed", {"lats": {"calls_mean": 40, "max_iterations": 10}}, 1024)
    assert isinstance(params, mixed.Params)
    assert params.lats.calls_mean == 40 and params.lats.max_iterations == 10
    assert params.sharegpt.max_prompt_tokens == 1024
    assert params.bfcl == mixed.Params().bfcl
    alone = workload_params("sharegpt", {}, 512)
    assert isinstance(alone, sharegpt.Params) and alone.max_prompt_tokens == 512


@pytest.mark.parametrize(
    ("values", "message"),
    [({"nope": 1}, "unknown workload parameter 'nope'"), ({"search_time": {"bad": 1}}, "'search_time.bad'")],
)
def test_unknown_workload_params_are_named(values: dict[str, object], message: str):
    with pytest.raises(ValueError, match=message):
        params_from_mapping(lats.Params, values, lats.Params())


def test_loadgen_settings_build_the_requested_programs():
    chosen = LoadgenSettings.model_validate({"workload": "bfcl", "num_programs": 4, "rate": 2.0, "seed": 3})
    programs = chosen.programs()
    assert len(programs) == 4 and all(p.workload == "bfcl" for p in programs)
    assert [p.arrival_time for p in programs] == sorted(p.arrival_time for p in programs)
    offline_settings = {"workload": "bfcl", "num_programs": 4, "offline": True, "seed": 3}
    offline = LoadgenSettings.model_validate(offline_settings).programs()
    assert {p.arrival_time for p in offline} == {0.0}
    with pytest.raises(ValueError, match="JSON"):
        LoadgenSettings.model_validate({"workload_params": "{nope"})
