"""The admission gate (gate.py): futures resolve in queue order, nothing leaks, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowParams
from autellix.engine_adapters.gate import AdmissionGate
from autellix.engine_adapters.scheduling import QueuedCall, get_policy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_gate(policy: str = "plas", size: int = 1, params: dict[str, object] | None = None, **window: object):
    clock = Clock()
    values: dict[str, object] = {"initial": size, "maximum": max(size, 64), "overprovision": 0}
    values.update(window)
    gate = AdmissionGate(get_policy(policy, params), AdmissionWindow(WindowParams(**values)), clock)  # type: ignore[arg-type]
    return gate, clock


def call(call_id: str, service: float = 0.0, program: str | None = None) -> QueuedCall:
    return QueuedCall(call_id, program or f"p-{call_id}", program_service=service)


async def turn() -> None:
    """Let the event loop finish its turn: the gate decides at the end of it (gate.py rule 2)."""
    await asyncio.sleep(0)


def assert_empty(gate: AdmissionGate) -> None:
    stats = gate.stats()
    assert gate.in_flight == 0 and gate.waiting == 0
    assert stats.queue.waiting == 0 and stats.queue.running == 0
    assert len(gate.queue) == 0


async def test_admits_at_once_while_there_is_room_then_queues_in_policy_order() -> None:
    gate, clock = make_gate(size=1)
    running = gate.enter(call("long-0", service=5.0))
    await turn()
    assert running.done()
    later = [gate.enter(call(f"long-{i}", service=5.0)) for i in (1, 2)]
    short = gate.enter(call("short", service=0.0))
    await turn()
    assert not any(f.done() for f in [*later, short])
    clock.now = 1.0
    gate.leave("long-0", completed=True)
    await turn()
    assert short.done() and short.result().call_id == "short" and short.result().level == 0
    assert not any(f.done() for f in later)
    gate.leave("short", completed=True)
    await turn()
    assert later[0].done() and not later[1].done()
    gate.leave("long-1", completed=True)
    gate.leave("long-2", completed=True)
    assert_empty(gate)


async def test_fcfs_keeps_arrival_order() -> None:
    gate, _ = make_gate("fcfs", size=1)
    gate.enter(call("a", service=5.0))
    b = gate.enter(call("b", service=5.0))
    c = gate.enter(call("c", service=0.0))
    await turn()
    gate.leave("a", completed=True)
    await turn()
    assert b.done() and not c.done()


async def test_leaving_while_waiting_frees_the_place_and_cancels_the_future() -> None:
    gate, _ = make_gate(size=1)
    gate.enter(call("a"))
    waiting = gate.enter(call("b"))
    await turn()
    departure = gate.leave("b", completed=False)
    assert departure is not None and not departure.was_admitted
    assert waiting.cancelled()
    assert gate.stats().aborted_waiting == 1
    assert gate.leave("b", completed=False) is None  # idempotent
    gate.leave("a", completed=True)
    assert_empty(gate)


async def test_leaving_after_admission_but_before_the_handler_ran_is_an_engine_abort() -> None:
    gate, _ = make_gate(size=1)
    gate.enter(call("a"))
    b = gate.enter(call("b"))
    await turn()
    gate.leave("a", completed=True)
    await turn()  # b is admitted: its future is resolved, its handler not yet run
    assert b.done()
    departure = gate.leave("b", completed=False)
    assert departure is not None and departure.was_admitted
    assert gate.stats().aborted_running == 1
    assert_empty(gate)


async def test_a_cancelled_handler_frees_its_place() -> None:
    gate, _ = make_gate(size=1)
    gate.enter(call("a"))
    await turn()

    async def handler() -> None:
        future = gate.enter(call("b"))
        try:
            await future
        finally:
            gate.leave("b", completed=False)

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.waiting == 0 and gate.queue.snapshot().waiting == 0


async def test_tick_charges_service_and_demotes_running_calls() -> None:
    gate, clock = make_gate(size=2, params={"boundaries": [0, 1, 2], "beta": None})
    gate.enter(call("a"))
    await turn()
    clock.now = 0.6
    assert gate.tick().demotions == ()
    clock.now = 1.2
    result = gate.tick()
    assert [(d.call_id, d.from_level, d.to_level) for d in result.demotions] == [("a", 0, 1)]
    assert gate.stats().queue.demoted == 1


async def test_tick_promotes_a_starving_call() -> None:
    gate, clock = make_gate(size=1, params={"beta": 0.5, "service_floor": 0.1})
    gate.enter(call("blocker"))
    await turn()
    heavy = gate.enter(call("heavy", service=4.0))  # level of [4, 8): needs 0.5 * 4 = 2 s of wait
    await turn()
    clock.now = 1.0
    early = gate.enter(call("early"))
    await turn()
    clock.now = 2.5
    promotions = gate.tick().promotions
    assert [p.call_id for p in promotions] == ["heavy"]
    gate.enter(call("late"))
    await turn()
    gate.leave("blocker", completed=True)
    await turn()
    assert early.done()  # promoted to the tail of the top level: behind early, ahead of late
    gate.leave("early", completed=True)
    await turn()
    assert heavy.done() and heavy.result().level == 0


async def test_window_growth_from_a_probe_admits_at_once() -> None:
    gate, _ = make_gate(size=1, maximum=8)
    futures = [gate.enter(call(f"c{i}")) for i in range(4)]
    await turn()
    assert sum(f.done() for f in futures) == 1
    change = gate.observe(EngineLoad(running=1, waiting=0))
    assert change.action == "grow"
    await turn()
    assert sum(f.done() for f in futures) == 2
    assert gate.stats().engine_load == EngineLoad(1, 0)
