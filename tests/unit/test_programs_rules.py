"""Table-driven tests of the program table's pure update rules (autellix/proxy/programs/rules.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from autellix.proxy.programs import (
    CallFinish,
    CallStart,
    InFlightCall,
    ProgramExpiry,
    ProgramState,
    apply_call_finish,
    apply_call_start,
    in_flight_engines,
    is_expired,
    measured_seconds,
    next_load,
)


def call(call_id: str, engine: str = "e0", *, s_atlas: float = 0.0, arrival: float = 0.0) -> InFlightCall:
    return InFlightCall(
        call_id=call_id,
        thread_id=None,
        engine_id=engine,
        arrival=arrival,
        index=0,
        service_plas_at_arrival=s_atlas,
        service_atlas_at_arrival=s_atlas,
    )


def program(
    *,
    pinned: str | None = None,
    plas: float = 0.0,
    atlas: float = 0.0,
    in_flight: tuple[InFlightCall, ...] = (),
    created: float = 0.0,
    arrival: float | None = None,
    completion: float | None = None,
) -> ProgramState:
    return ProgramState(
        program_id="p",
        created_at=created,
        service_plas=plas,
        service_atlas=atlas,
        pinned_engine=pinned,
        in_flight=in_flight,
        last_arrival=arrival,
        last_completion=completion,
        calls_started=len(in_flight),
    )


@dataclass(frozen=True)
class StartCase:
    name: str
    state: ProgramState | None
    start: CallStart
    engine: str
    pin_created: bool
    pinned_after: str | None
    acquired: bool = True


START_CASES = [
    StartCase("new program, no pin", None, CallStart("p", "c", "e1"), "e1", False, None),
    StartCase("new program, pin request pins", None, CallStart("p", "c", "e1", pin=True), "e1", True, "e1"),
    StartCase("pinned elsewhere, pin request redirected", program(pinned="e2"),
              CallStart("p", "c", "e1", pin=True), "e2", False, "e2"),
    StartCase("pinned elsewhere, no pin request keeps routing", program(pinned="e2"),
              CallStart("p", "c", "e1"), "e1", False, "e2"),
    StartCase("pinned here, pin request", program(pinned="e1"), CallStart("p", "c", "e1", pin=True),
              "e1", False, "e1"),
    StartCase("duplicate call id keeps the first engine", program(in_flight=(call("c", "e3"),)),
              CallStart("p", "c", "e1", pin=True), "e3", False, None, acquired=False),
]  # fmt: skip


@pytest.mark.parametrize("case", START_CASES, ids=lambda c: c.name)
def test_apply_call_start(case: StartCase) -> None:
    outcome = apply_call_start(case.state, case.start, now=7.0)
    assert outcome.call.engine_id == case.engine
    assert outcome.pin_created == case.pin_created
    assert outcome.state.pinned_engine == case.pinned_after
    assert outcome.acquired == case.acquired
    if case.acquired:
        assert outcome.state.last_arrival == 7.0
        assert outcome.state.in_flight[-1] == outcome.call
    else:
        assert outcome.state is case.state


def test_a_start_snapshots_both_service_values_and_leaves_them_unchanged() -> None:
    before = program(plas=6.0, atlas=5.0)
    outcome = apply_call_start(before, CallStart("p", "c", "e0", thread_id="t"), now=1.0)
    assert (outcome.call.service_plas_at_arrival, outcome.call.service_atlas_at_arrival) == (6.0, 5.0)
    assert (outcome.state.service_plas, outcome.state.service_atlas) == (6.0, 5.0)
    assert (outcome.call.index, outcome.state.calls_started) == (0, 1)
    assert before.in_flight == ()  # the input snapshot is never mutated


@dataclass(frozen=True)
class FinishCase:
    name: str
    state: ProgramState
    exec_time: float
    plas: float
    atlas: float


FINISH_CASES = [
    FinishCase("chain: S grows like the sum",
               program(plas=2.0, atlas=2.0, in_flight=(call("c", s_atlas=2.0),)), 3.0, 5.0, 5.0),
    FinishCase("parallel sibling: S from arrival, sum keeps growing",
               program(plas=5.0, atlas=5.0, in_flight=(call("c", s_atlas=2.0),)), 1.0, 6.0, 5.0),
    FinishCase("longer sibling raises S", program(plas=5.0, atlas=5.0, in_flight=(call("c", s_atlas=2.0),)),
               4.0, 9.0, 6.0),
    FinishCase("negative exec counts zero", program(plas=1.0, atlas=1.0, in_flight=(call("c", s_atlas=1.0),)),
               -2.0, 1.0, 1.0),
    FinishCase("infinite exec counts zero", program(in_flight=(call("c"),)), math.inf, 0.0, 0.0),
]  # fmt: skip


@pytest.mark.parametrize("case", FINISH_CASES, ids=lambda c: c.name)
def test_apply_call_finish(case: FinishCase) -> None:
    outcome = apply_call_finish(case.state, CallFinish("p", "c", exec_time=case.exec_time), now=9.0)
    assert outcome is not None
    assert (outcome.state.service_plas, outcome.state.service_atlas) == (case.plas, case.atlas)
    assert outcome.state.in_flight == ()
    assert outcome.state.last_completion == 9.0
    assert outcome.call.call_id == "c"


def test_finish_of_a_call_not_in_flight_is_none() -> None:
    assert apply_call_finish(program(in_flight=(call("a"),)), CallFinish("p", "b", 1.0), now=0.0) is None


@pytest.mark.parametrize(
    ("name", "in_flight", "created", "arrival", "completion", "now", "expired"),
    [
        ("idle exactly at the TTL", (), 0.0, None, 10.0, 70.0, False),
        ("idle just past the TTL", (), 0.0, None, 10.0, 70.5, True),
        ("never used, past the TTL from creation", (), 5.0, None, None, 66.0, True),
        ("in flight past the idle TTL", (call("c"),), 0.0, 0.0, None, 500.0, False),
        ("in flight past the stuck TTL", (call("c"),), 0.0, 0.0, None, 601.0, True),
        ("activity is the latest of arrival and completion", (), 0.0, 50.0, 20.0, 100.0, False),
    ],
)
def test_is_expired(
    name: str,
    in_flight: tuple[InFlightCall, ...],
    created: float,
    arrival: float | None,
    completion: float | None,
    now: float,
    expired: bool,
) -> None:
    state = program(in_flight=in_flight, created=created, arrival=arrival, completion=completion)
    assert is_expired(state, now, ProgramExpiry(idle_ttl=60.0, stuck_ttl=600.0)) is expired


@pytest.mark.parametrize(
    ("idle", "stuck"), [(0.0, 10.0), (-1.0, 10.0), (math.inf, math.inf), (60.0, 30.0), (60.0, math.nan)]
)
def test_invalid_expiry_is_rejected(idle: float, stuck: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        ProgramExpiry(idle_ttl=idle, stuck_ttl=stuck)


@pytest.mark.parametrize(
    ("value", "expected"), [(1.5, 1.5), (0.0, 0.0), (-1.0, 0.0), (math.nan, 0.0), (math.inf, 0.0)]
)
def test_measured_seconds(value: float, expected: float) -> None:
    assert measured_seconds(value) == expected


@pytest.mark.parametrize(("count", "delta", "expected"), [(0, 1, 1), (3, -1, 2), (1, -1, 0), (0, -1, 0)])
def test_next_load_never_goes_negative(count: int, delta: int, expected: int) -> None:
    assert next_load(count, delta) == expected


def test_in_flight_engines_lists_one_engine_per_call() -> None:
    state = program(in_flight=(call("a", "e1"), call("b", "e2"), call("c", "e1")))
    assert in_flight_engines(state) == ("e1", "e2", "e1")


def test_threads_group_calls_in_order_of_first_arrival() -> None:
    calls = tuple(
        InFlightCall(cid, thread, "e0", 0.0, i, 0.0, 0.0)
        for i, (cid, thread) in enumerate([("a", "t2"), ("b", None), ("c", "t2")])
    )
    assert program(in_flight=calls).threads() == {"t2": (calls[0], calls[2]), None: (calls[1],)}
