"""The sidecar's admission core (scheduler.py): KV budget, gate and queue together, waits, no leaks."""

from __future__ import annotations

import pytest

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowParams
from autellix.engine_adapters.scheduler import CallTokens, CallUsage, PreemptParams, SidecarScheduler
from autellix.engine_adapters.scheduling import QueuedCall, get_policy
from autellix.engine_adapters.scheduling.working_set import WorkingSetGate, WorkingSetParams


def scheduler(
    capacity: int | None = 1000, window: int = 64, gate: WorkingSetParams | None = None, policy: str = "plas"
) -> SidecarScheduler:
    win = AdmissionWindow(WindowParams(initial=window, maximum=window, overprovision=0, adaptive=False))
    return SidecarScheduler(
        get_policy(policy),
        win,
        WorkingSetGate(gate) if gate is not None else None,
        kv_capacity_tokens=capacity,
        kv_headroom=0.0,
    )


def queued(cid: str, pid: str | None = None, service: float = 0.0) -> QueuedCall:
    return QueuedCall(cid, pid or f"p-{cid}", program_service=service)


def ids(admissions: tuple[object, ...]) -> list[str]:
    return [a.call_id for a in admissions]  # type: ignore[attr-defined]


def test_the_kv_budget_admits_what_fits_beside_the_calls_in_the_engine() -> None:
    s = scheduler()
    for i in range(3):
        s.enter(queued(f"c{i}"), 0.0, CallTokens(300, 100))
    assert ids(s.select(0.0)) == ["c0", "c1"]  # 400 + 400; a third would make 1200
    s.leave("c0", 1.0, True)
    assert ids(s.select(1.0)) == ["c2"]
    assert s.in_flight == 2 and s.waiting == 0


def test_a_probe_replaces_estimates_by_what_the_engine_holds() -> None:
    s = scheduler()
    s.enter(queued("a"), 0.0, CallTokens(300, 100))
    assert ids(s.select(0.0)) == ["a"]
    # the engine holds 350 tokens of a (a hit on cached blocks, part of its output); a's reserve stays
    s.observe(EngineLoad(1, 0, kv_usage=0.35, kv_capacity_tokens=1000), 0.5)
    assert s.reserved_tokens() == 350 + 100
    s.enter(queued("b"), 0.6, CallTokens(400, 100))
    s.enter(queued("c"), 0.6, CallTokens(40, 10))
    assert ids(s.select(0.6)) == ["b", "c"]  # 450 + 500 + 50 = 1000
    s.enter(queued("d"), 0.7, CallTokens(1, 1))
    assert s.select(0.7) == ()


def test_calls_admitted_after_a_probe_was_sent_count_whole() -> None:
    s = scheduler()
    s.enter(queued("a"), 0.0, CallTokens(300, 100))
    s.select(0.0)
    s.enter(queued("b"), 0.2, CallTokens(300, 100))
    s.select(0.2)
    s.observe(EngineLoad(1, 0, kv_usage=0.3, kv_capacity_tokens=1000), 0.3, sent_at=0.1)  # before b
    assert s.reserved_tokens() == 300 + 100 + 400


def test_an_empty_engine_takes_a_call_larger_than_its_cache() -> None:
    s = scheduler()
    s.enter(queued("huge"), 0.0, CallTokens(5000, 100))
    assert ids(s.select(0.0)) == ["huge"]


def test_without_a_capacity_only_the_window_limits() -> None:
    s = scheduler(capacity=None, window=2)
    for i in range(3):
        s.enter(queued(f"c{i}"), 0.0, CallTokens(10_000, 10_000))
    assert ids(s.select(0.0)) == ["c0", "c1"]


def test_a_call_of_a_new_program_waits_at_the_gate_and_its_wait_counts() -> None:
    s = scheduler(gate=WorkingSetParams(headroom=0.0, beta=None, ttl_default=1.0))
    s.enter(queued("a0", "A"), 0.0, CallTokens(700, 100))
    assert ids(s.select(0.0)) == ["a0"]
    s.enter(queued("b0", "B"), 0.5, CallTokens(300, 100))
    assert s.select(0.5) == ()  # B's 400 beside A's 800 do not fit the 1000 tokens
    assert s.stats().gate is not None and s.stats().gate.waiting_calls == 1  # type: ignore[union-attr]
    s.leave("a0", 2.0, True, CallUsage(2.0, 700, 100, 0))
    assert s.select(2.5) == ()  # A's history stays resident for its TTL
    (admission,) = s.select(3.1)
    assert admission.call_id == "b0" and admission.waited == pytest.approx(2.6)


def test_displaced_calls_leave_the_queue_and_come_back() -> None:
    params = WorkingSetParams(headroom=0.0, beta=None, residency_quantum=1.0)
    s = scheduler(gate=params, window=1)
    s.enter(queued("l0", "L", service=0.0), 0.0, CallTokens(700, 100))
    s.select(0.0)
    s.enter(queued("x0", "X"), 0.0, CallTokens(10, 10))  # X gets in beside L, then waits for the window
    s.select(0.0)
    s.leave("l0", 3.0, True, CallUsage(3.0, 700, 100, 0))
    s.enter(queued("l1", "L", service=3.0), 3.0, CallTokens(900, 50))  # L resident: to the queue
    (first,) = s.select(3.0)
    assert first.call_id == "x0"  # X has less service than L
    s.enter(queued("n0", "N", service=0.0), 3.1, CallTokens(200, 100))
    assert s.select(3.1) == ()  # window full (x0 runs); but N displaced L: l1 waits at the gate again
    stats = s.stats()
    assert stats.gate is not None and stats.gate.displaced_programs == 1
    assert stats.queue.waiting == 1  # n0 in the queue, l1 back at the gate
    s.leave("x0", 4.0, True)
    assert ids(s.select(4.0)) == ["n0"]


def test_leave_is_idempotent_in_every_state() -> None:
    s = scheduler(gate=WorkingSetParams(headroom=0.0, beta=None), window=1)
    s.enter(queued("a", "A"), 0.0, CallTokens(900, 10))
    s.select(0.0)
    s.enter(queued("b", "B"), 0.0, CallTokens(900, 10))  # at the gate
    s.enter(queued("a2", "A"), 0.0, CallTokens(900, 10))  # in the queue (window full)
    s.select(0.0)
    for call_id in ("a", "b", "a2", "a", "nope"):
        s.leave(call_id, 1.0, False)
    stats = s.stats()
    assert s.in_flight == 0 and s.waiting == 0
    assert stats.queue.waiting == stats.queue.running == 0
    assert stats.aborted_running == 1 and stats.aborted_waiting == 2


def test_service_is_charged_while_calls_run() -> None:
    s = scheduler(policy="plas")
    s.enter(queued("a"), 0.0, CallTokens(10, 10))
    s.select(0.0)
    result = s.tick(0.6)  # past the top level's 0.5 s quantum
    assert [d.call_id for d in result.demotions] == ["a"]


def test_errors() -> None:
    s = scheduler()
    s.enter(queued("a"), 1.0)
    with pytest.raises(ValueError, match="already known"):
        s.enter(queued("a"), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        s.select(0.5)
    with pytest.raises(ValueError, match="kv_headroom"):
        SidecarScheduler(get_policy("fcfs"), AdmissionWindow(), kv_headroom=1.5)


def preempting() -> SidecarScheduler:
    """One call at a time; abort-and-resume after a 1 s quantum (rule 5)."""
    win = AdmissionWindow(WindowParams(initial=1, maximum=1, overprovision=0, adaptive=False))
    return SidecarScheduler(get_policy("plas"), win, preempt=PreemptParams(min_run=1.0))


def running_low_and_waiting_high() -> SidecarScheduler:
    s = preempting()
    s.enter(queued("low", service=20.0), 0.0, CallTokens(10, 500), resumable=True)
    assert ids(s.select(0.0)) == ["low"]
    s.enter(queued("high"), 2.0, CallTokens(10, 10))
    assert s.select(2.0) == ()
    return s


def test_a_call_the_shell_can_no_longer_resume_is_never_stopped() -> None:
    s = running_low_and_waiting_high()
    s.no_longer_resumable("low")
    s.no_longer_resumable("unknown")  # ignored
    assert s.preempt(2.0) == ()


def test_a_stopped_call_whose_stream_ended_before_the_stop_leaves_as_completed_not_aborted() -> None:
    s = running_low_and_waiting_high()
    assert [p.call_id for p in s.preempt(2.0)] == ["low"]
    assert ids(s.select(2.0)) == ["high"]
    departure = s.leave("low", 2.1, True, CallUsage(2.0, 10, 0, 500))
    assert departure is not None and departure.was_admitted
    stats = s.stats()
    assert (stats.preempted, stats.aborted_waiting, stats.aborted_running) == (1, 0, 0)
