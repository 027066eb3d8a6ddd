"""The KV working-set gate (scheduling/working_set.py): residency, fit, displacement, TTL, starvation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine_adapters.scheduling.working_set import GateCall, WorkingSetGate, WorkingSetParams

NO_HEADROOM = WorkingSetParams(headroom=0.0, beta=None)


def call(cid: str, pid: str, prompt: int = 100, reserve: int = 0, service: float = 0.0) -> GateCall:
    return GateCall(cid, pid, service, 0.0, prompt, reserve)


def gate(capacity: int | None = 1000, **params: object) -> WorkingSetGate:
    values: dict[str, object] = {"headroom": 0.0, "beta": None}
    values.update(params)
    return WorkingSetGate(WorkingSetParams(**values), capacity)  # type: ignore[arg-type]


def enter(g: WorkingSetGate, c: GateCall, now: float) -> bool:
    """Arrive, then release (as the scheduler's select does): True if the call got through now."""
    if g.arrive(c, now):
        return True
    return c.call_id in g.release(now).released


def test_a_new_program_waits_for_release_which_orders_the_gate() -> None:
    g = gate()
    assert not g.arrive(call("a0", "A"), 0.0)
    assert g.release(0.0).released == ("a0",)
    assert g.arrive(call("a1", "A"), 0.0)  # resident now: straight through


def test_without_a_capacity_the_gate_is_open() -> None:
    g = gate(capacity=None)
    assert all(g.arrive(call(f"c{i}", f"p{i}", prompt=10_000), 0.0) for i in range(5))
    assert g.release(0.0).released == ()
    assert g.stats().residents == 5


def test_programs_are_let_in_while_their_footprints_fit() -> None:
    g = gate()
    assert enter(g, call("a0", "A", prompt=500, reserve=100), 0.0)  # the first always fits
    assert not enter(g, call("b0", "B", prompt=300, reserve=200), 0.0)  # 600 + 500 > 1000
    assert g.release(0.0).released == ()
    assert g.waiting_calls() == ("b0",)
    g.finished("a0", 1.0, exec_time=1.0, prompt_tokens=500, output_tokens=50, cached_tokens=0)
    # A is idle but resident for its TTL (2 s by default): its history (550 tokens) still counts
    assert g.release(2.5).released == ()
    assert g.release(3.1).released == ("b0",)
    assert not g.is_resident("A") and g.is_resident("B")


def test_calls_of_a_resident_program_pass_at_once() -> None:
    g = gate()
    assert enter(g, call("a0", "A", prompt=900), 0.0)
    g.finished("a0", 1.0, exec_time=1.0, prompt_tokens=900, output_tokens=50)
    assert g.arrive(call("a1", "A", prompt=990), 1.0)  # its own next call, even though it is large
    assert g.resident_tokens() == 990


def test_an_empty_gate_takes_a_program_larger_than_the_cache() -> None:
    g = gate()
    assert enter(g, call("a0", "A", prompt=5000), 0.0)


def test_no_skipping_ahead_of_a_program_that_does_not_fit() -> None:
    g = gate()
    enter(g, call("a0", "A", prompt=600), 0.0)
    g.arrive(call("b0", "B", prompt=500), 0.0)  # does not fit beside A
    g.arrive(call("c0", "C", prompt=100), 0.0)  # would fit, but B is first
    assert g.release(0.0).released == ()
    assert g.waiting_calls() == ("b0", "c0")


def test_las_orders_the_gate_by_service_then_age() -> None:
    g = gate()
    enter(g, call("a0", "A", prompt=1000), 0.0)
    g.arrive(call("x", "X", prompt=10, service=5.0), 0.0)
    g.arrive(call("y", "Y", prompt=10, service=1.0), 0.0)
    g.arrive(call("z", "Z", prompt=10, service=1.0), 0.0)
    assert g.waiting_calls() == ("y", "z", "x")
    fifo = gate(order="fifo")
    enter(fifo, call("a0", "A", prompt=1000), 0.0)
    for name, service in (("x", 5.0), ("y", 1.0), ("z", 1.0)):
        fifo.arrive(call(name, name.upper(), prompt=10, service=service), 0.0)
    assert fifo.waiting_calls() == ("x", "y", "z")


def served_resident(g: WorkingSetGate, pid: str, service: float, exec_time: float, now: float) -> None:
    """Make ``pid`` resident, serve one call of it for ``exec_time``, and queue its next call."""
    assert enter(g, call(f"{pid}0", pid, prompt=800, service=service), now)
    g.started(f"{pid}0", now)
    g.finished(f"{pid}0", now + exec_time, exec_time=exec_time, prompt_tokens=800, output_tokens=100)
    assert g.arrive(call(f"{pid}1", pid, prompt=900, service=service + exec_time), now + exec_time)


def test_a_resident_past_its_quantum_gives_way_to_a_program_with_less_service() -> None:
    g = gate(residency_quantum=4.0)
    served_resident(g, "L", service=10.0, exec_time=5.0, now=0.0)  # queued, not running, quantum used
    assert not g.arrive(call("n0", "N", prompt=500, service=0.0), 5.0)
    release = g.release(5.0)
    assert release.displaced == ("L",)
    assert release.recalled == ("L1",)  # the shell takes it out of its queue
    assert release.released == ("n0",)
    assert g.waiting_calls() == ("L1",)
    assert g.stats().displaced_programs == 1


@pytest.mark.parametrize(
    ("quantum", "running", "newcomer_service", "order"),
    [
        (8.0, False, 0.0, "las"),  # quantum not used up yet
        (4.0, True, 0.0, "las"),  # a call of it runs in the engine
        (4.0, False, 20.0, "las"),  # the newcomer has more service: it does not rank ahead
        (4.0, False, 0.0, "fifo"),  # fifo never displaces (except for a starving program)
        (math.inf, False, 0.0, "las"),  # an infinite quantum never displaces
    ],
)
def test_a_resident_keeps_its_place(
    quantum: float, running: bool, newcomer_service: float, order: str
) -> None:
    g = gate(residency_quantum=quantum, order=order)
    served_resident(g, "L", service=10.0, exec_time=5.0, now=0.0)
    if running:
        g.started("L1", 5.0)
    assert not g.arrive(call("n0", "N", prompt=500, service=newcomer_service), 5.0)
    release = g.release(5.0)
    assert release.displaced == () and release.released == ()
    assert g.is_resident("L")


def test_ttl_is_learned_from_the_programs_own_gaps() -> None:
    g = gate(ttl_default=2.0, ttl_factor=2.0, ttl_min=0.5, ttl_max=60.0)
    assert enter(g, call("a0", "A"), 0.0)
    assert g.ttl_of("A") == 2.0
    g.finished("a0", 1.0, exec_time=1.0)
    assert not g.arrive(call("a1", "A"), 4.0)  # a 3 s gap: past the 2 s default, A had expired
    assert g.stats().expired_programs == 1
    assert g.release(4.0).released == ("a1",)
    g.finished("a1", 5.0, exec_time=1.0)
    assert g.arrive(call("a2", "A"), 6.5)  # a 1.5 s gap, within the default TTL
    assert g.ttl_of("A") == pytest.approx(3.0)  # 2 x 1.5
    g.finished("a2", 7.0, exec_time=0.5)
    assert g.arrive(call("a3", "A"), 7.5)  # a 0.5 s gap: average 1.0, but the last gap seen counts
    assert g.ttl_of("A") == pytest.approx(2.0 * max(0.5 * 0.5 + 0.5 * 1.5, 0.5))


def test_ttl_is_clamped() -> None:
    g = gate(ttl_default=100.0, ttl_min=0.5, ttl_max=10.0)
    enter(g, call("a0", "A"), 0.0)
    g.finished("a0", 1.0)
    g.arrive(call("a1", "A"), 51.0)
    assert g.ttl_of("A") == 10.0
    g.finished("a1", 52.0)
    g.arrive(call("a2", "A"), 52.0)
    assert g.ttl_of("A") >= 0.5


def test_a_prefix_shared_with_other_programs_counts_once() -> None:
    g = gate(capacity=10_000)
    for i in range(3):
        pid = f"P{i}"
        assert enter(g, call(f"{pid}-0", pid, prompt=3000), 0.0)
        g.finished(
            f"{pid}-0", 0.0, prompt_tokens=3000, output_tokens=100, cached_tokens=0 if i == 0 else 2500
        )
    # P0 brought the 2,500-token schema; P1 and P2 found it cached: 3100 + 2 x 600 + the schema once
    assert g.resident_tokens() == 3100 + 600 + 600 + 2500
    assert enter(g, call("P3-0", "P3", prompt=3000), 1.0)  # 6800 + 3000 fits in 10000
    assert not enter(g, call("P4-0", "P4", prompt=3000), 1.0)  # counted whole until it reports


def test_a_starving_program_is_promoted_and_may_displace_any_served_resident() -> None:
    g = gate(residency_quantum=4.0, beta=2.0, service_floor=1.0)
    served_resident(g, "L", service=0.0, exec_time=5.0, now=0.0)  # L: 5 s of service
    assert not g.arrive(call("s0", "S", prompt=500, service=6.0), 5.0)  # S ranks behind L under las
    assert g.release(5.0).released == ()
    assert g.release(16.9).released == ()
    release = g.release(17.0)  # S has waited 12 s = 2 x its 6 s of service
    assert release.displaced == ("L",) and release.released == ("s0",)
    assert g.stats().promoted_programs == 1


def test_finished_is_idempotent_and_forgets_waiting_calls() -> None:
    g = gate()
    enter(g, call("a0", "A", prompt=1000), 0.0)
    g.arrive(call("b0", "B"), 0.0)
    g.finished("b0", 1.0)  # the client went away while it waited at the gate
    g.finished("b0", 1.0)
    g.finished("unknown", 1.0)
    assert g.waiting_calls() == ()
    assert g.stats().waiting_programs == 0


def test_errors() -> None:
    g = gate()
    enter(g, call("a0", "A"), 5.0)
    with pytest.raises(ValueError, match="already known"):
        g.arrive(call("a0", "A"), 5.0)
    with pytest.raises(ValueError, match="backwards"):
        g.release(4.0)
    with pytest.raises(ValueError, match="capacity"):
        g.set_capacity(0)
    with pytest.raises(ValueError, match="headroom"):
        WorkingSetParams(headroom=1.0)
    with pytest.raises(ValueError, match="residency_quantum"):
        WorkingSetParams(residency_quantum=-1.0)
    with pytest.raises(ValueError, match="ttl_min"):
        WorkingSetParams(ttl_min=5.0, ttl_max=1.0)


events = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "start", "finish", "release"]),
        st.integers(0, 5),  # program
        st.integers(1, 600),  # prompt tokens
        st.floats(0.0, 3.0),  # time step
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events, st.sampled_from(["las", "fifo"]), st.sampled_from([0.0, 2.0, math.inf]))
def test_every_call_is_in_exactly_one_place(
    script: list[tuple[str, int, int, float]], order: str, q: float
) -> None:
    g = gate(capacity=1500, order=order, residency_quantum=q, beta=3.0, ttl_default=1.0)
    now = 0.0
    passed: set[str] = set()  # calls the gate let through (at arrival or by release), not finished
    waiting: set[str] = set()
    started: set[str] = set()
    serial = 0
    for kind, program, prompt, step in script:
        now += step
        pid = f"P{program}"
        if kind == "arrive":
            serial += 1
            cid = f"{pid}/{serial}"
            (passed if g.arrive(call(cid, pid, prompt=prompt, service=program * 1.0), now) else waiting).add(
                cid
            )
        elif kind == "start" and passed - started:
            cid = sorted(passed - started)[0]
            g.started(cid, now)
            started.add(cid)
        elif kind == "finish" and (passed | waiting):
            cid = sorted(passed | waiting)[prompt % len(passed | waiting)]
            g.finished(cid, now, exec_time=step, prompt_tokens=prompt, output_tokens=10)
            passed.discard(cid)
            waiting.discard(cid)
            started.discard(cid)
        else:
            release = g.release(now)
            assert set(release.released) <= waiting
            assert set(release.recalled) <= passed - started  # never a call that runs
            assert not set(release.released) & set(release.recalled)
            waiting -= set(release.released)
            passed |= set(release.released)
            passed -= set(release.recalled)
            waiting |= set(release.recalled)
        assert set(g.waiting_calls()) == waiting
        assert g.stats().waiting_calls == len(waiting)
