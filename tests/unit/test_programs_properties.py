"""Property tests of the program-table rules over arbitrary operation sequences (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.programs import CallFinish, CallStart, MemoryProgramTable, ProgramExpiry, measured_seconds

PROGRAMS = ["p0", "p1", "p2"]
ENGINES = ["e0", "e1", "e2", "e3"]

exec_times = st.one_of(st.floats(min_value=0.0, max_value=50.0), st.sampled_from([-1.0, float("nan"), 0.0]))
operation = st.one_of(
    st.tuples(
        st.just("start"),
        st.sampled_from(PROGRAMS),
        st.integers(0, 15),
        st.sampled_from(ENGINES),
        st.booleans(),
        st.sampled_from([None, "t1", "t2"]),
    ),
    st.tuples(st.just("finish"), st.sampled_from(PROGRAMS), st.integers(0, 15), exec_times, st.booleans()),
    st.tuples(st.just("end"), st.sampled_from(PROGRAMS)),
    st.tuples(
        st.just("gc"),
    ),
)
sequences = st.lists(st.tuples(operation, st.floats(min_value=0.0, max_value=300.0)), max_size=60)


def in_flight_per_engine(table: MemoryProgramTable) -> Counter[str]:
    counts: Counter[str] = Counter()
    for program_id in table.program_ids():
        state = table.get(program_id)
        assert state is not None
        counts.update(call.engine_id for call in state.in_flight)
    return counts


@settings(max_examples=150, deadline=None)
@given(sequences)
def test_rules_hold_after_any_sequence_of_operations(ops: list[tuple[tuple[object, ...], float]]) -> None:
    table = MemoryProgramTable(ProgramExpiry(idle_ttl=100.0, stuck_ttl=1000.0))
    now = 0.0
    previous: dict[str, tuple[float, float]] = {}
    completed_exec: dict[str, float] = {}  # an independent PLAS model: sum of completed exec times
    for op, dt in ops:
        now += dt
        kind = op[0]
        if kind == "start":
            _, program, n, engine, pin, thread = op
            thread_id = None if thread is None else str(thread)
            start = CallStart(str(program), f"c{n}", str(engine), thread_id=thread_id, pin=bool(pin))
            table.start_call(start, now)
        elif kind == "finish":
            _, program, n, exec_time, ok = op
            assert isinstance(exec_time, float)
            if table.finish_call(CallFinish(str(program), f"c{n}", exec_time, ok=bool(ok)), now) is not None:
                completed_exec[str(program)] = completed_exec.get(str(program), 0.0) + measured_seconds(
                    exec_time
                )
        elif kind == "end":
            table.end(str(op[1]), now)
        else:
            table.gc(now)

        for program in PROGRAMS:
            state = table.get(program)
            if state is None:
                previous.pop(program, None)
                completed_exec.pop(program, None)
                continue
            assert state.service_atlas <= state.service_plas  # a critical path never exceeds the sum
            plas, atlas = previous.get(program, (0.0, 0.0))
            assert state.service_plas >= plas and state.service_atlas >= atlas  # monotone
            previous[program] = (state.service_plas, state.service_atlas)
            assert abs(state.service_plas - completed_exec.get(program, 0.0)) <= 1e-9 * (
                1 + state.service_plas
            )
        loads = table.engine_loads()
        assert all(count > 0 for count in loads.values())  # never negative, zero entries dropped
        assert loads == dict(in_flight_per_engine(table))


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=100.0),
    st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=8),
)
def test_parallel_calls_raise_atlas_by_the_longest_and_plas_by_the_sum(
    prefix: float, branches: list[float]
) -> None:
    table = MemoryProgramTable()
    table.start_call(CallStart("p", "root", "e0"), 0.0)
    table.finish_call(CallFinish("p", "root", prefix), 1.0)
    for i in range(len(branches)):
        table.start_call(CallStart("p", f"b{i}", "e0", thread_id=f"t{i}"), 2.0)
    for i, exec_time in enumerate(branches):
        table.finish_call(CallFinish("p", f"b{i}", exec_time), 3.0)
    state = table.get("p")
    assert state is not None
    assert state.service_atlas == max(prefix + b for b in branches)
    assert state.service_plas == sum([prefix, *branches])
