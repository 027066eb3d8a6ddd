"""Hand-worked schedules of the discretised multi-level queue (PLAS, ATLAS, MLFQ) on a virtual clock."""

from __future__ import annotations

import math

import pytest

from autellix.engine_adapters.scheduling import (
    CapacityBudget,
    Demotion,
    MultiLevelParams,
    QueuedCall,
    QueuePolicy,
    get_policy,
)
from autellix.engine_adapters.scheduling.multilevel import MultiLevelQueue


def call(call_id: str, program: str, service: float = 0.0, wait: float = 0.0, size: int = 1) -> QueuedCall:
    return QueuedCall(call_id, program, program_service=service, program_wait=wait, size=size)


def admit(queue: QueuePolicy, now: float, calls: int = 1, size: int | None = None) -> list[str]:
    return [a.call_id for a in queue.select_admissions(now, CapacityBudget(calls, size))]


def plas(**params: object) -> MultiLevelQueue:
    queue = get_policy("plas", params)
    assert isinstance(queue, MultiLevelQueue)
    return queue


# ----- placement -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "level"),
    [(0.0, 0), (0.49, 0), (0.5, 1), (0.99, 1), (1.0, 2), (3.99, 3), (4.0, 4), (31.9, 6), (32.0, 7), (1e6, 7)],
)
def test_plas_places_by_half_open_service_range(service: float, level: int) -> None:
    queue = plas()
    assert queue.add(call("c", "P", service=service), now=0.0) == level
    assert queue.snapshot().waiting_per_level[level] == 1


@pytest.mark.parametrize("service", [0.0, 0.7, 5.0, 100.0])
def test_mlfq_puts_every_new_call_at_the_top(service: float) -> None:
    queue = get_policy("mlfq")
    assert queue.add(call("c", "P", service=service), now=0.0) == 0


def test_default_quanta_are_level_widths_and_last_is_infinite() -> None:
    assert MultiLevelParams().resolved_quanta() == (0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
    explicit = MultiLevelParams(boundaries=(0.0, 1.0, 3.0), quanta=(0.2, 0.4, 0.8))
    assert explicit.resolved_quanta() == (0.2, 0.4, math.inf)


# ----- who goes first ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("plas", ["b1", "a1"]),  # B has no service: its later call goes first
        ("atlas", ["b1", "a1"]),
        ("mlfq", ["a1", "b1"]),  # both at the top: arrival order
        ("fcfs", ["a1", "b1"]),
    ],
)
def test_short_program_overtakes_long_program_only_when_program_aware(
    policy: str, expected: list[str]
) -> None:
    queue = get_policy(policy)
    queue.add(call("a1", "A", service=5.0), now=0.0)
    queue.add(call("b1", "B", service=0.0), now=1.0)
    assert admit(queue, now=2.0) == expected[:1]
    assert admit(queue, now=3.0) == expected[1:]


def test_fifo_inside_a_level() -> None:
    queue = plas()
    for i, service in enumerate([1.2, 1.9, 1.0, 1.5]):  # all in [1, 2)
        queue.add(call(f"c{i}", f"P{i}", service=service), now=float(i))
    assert admit(queue, now=10.0, calls=4) == ["c0", "c1", "c2", "c3"]


def test_selection_stops_at_first_call_that_does_not_fit() -> None:
    queue = plas()
    queue.add(call("small", "A", size=5), now=0.0)
    queue.add(call("big", "B", size=50), now=0.1)
    queue.add(call("tiny", "C", size=1), now=0.2)
    # room for 10 units: 'tiny' would fit, but the scan must not skip past 'big'
    assert admit(queue, now=1.0, calls=10, size=10) == ["small"]
    assert queue.waiting_order() == ("big", "tiny")


def test_atlas_parallel_calls_share_a_level_and_go_together_before_a_longer_critical_path() -> None:
    queue = get_policy("atlas")
    queue.add(call("long", "L", service=6.0), now=0.0)  # critical path 6 s -> [4, 8)
    for thread in ("t1", "t2", "t3"):  # three parallel threads of a program whose S is 1.5 s
        queue.add(QueuedCall(f"p-{thread}", "P", thread_id=thread, program_service=1.5), now=1.0)
    levels = {queue.get(f"p-{t}").level for t in ("t1", "t2", "t3")}  # type: ignore[union-attr]
    assert levels == {2}
    assert admit(queue, now=2.0, calls=3) == ["p-t1", "p-t2", "p-t3"]
    assert admit(queue, now=2.0, calls=3) == ["long"]


# ----- demotion ----------------------------------------------------------------------------------------


def test_call_that_uses_up_its_quantum_moves_down_one_level() -> None:
    queue = plas()
    queue.add(call("c", "P", service=1.0), now=0.0)  # level 2, quantum 1 s
    assert admit(queue, now=0.0) == ["c"]
    assert queue.record_service("c", 0.6, now=0.6) is None
    assert queue.record_service("c", 0.4, now=1.0) == Demotion("c", 2, 3)
    record = queue.get("c")
    assert record is not None and record.level == 3 and record.quantum_used == 0.0
    assert queue.snapshot().running_per_level[3] == 1


def test_large_service_report_carries_over_like_many_small_ones() -> None:
    whole, pieces = plas(), plas()
    for queue in (whole, pieces):
        queue.add(call("c", "P"), now=0.0)
        admit(queue, now=0.0)
    assert whole.record_service("c", 3.0, now=3.0) == Demotion("c", 0, 3)  # 0.5 + 0.5 + 1 used, 1 left
    for step in range(30):
        pieces.record_service("c", 0.1, now=0.1 * (step + 1))
    for queue in (whole, pieces):
        record = queue.get("c")
        assert record is not None and record.level == 3
        assert record.quantum_used == pytest.approx(1.0)
    assert whole.snapshot().demoted == 1 and pieces.snapshot().demoted == 3


def test_bottom_level_never_demotes() -> None:
    queue = plas()
    queue.add(call("c", "P", service=100.0), now=0.0)
    admit(queue, now=0.0)
    assert queue.record_service("c", 1000.0, now=1000.0) is None


def test_demoted_call_requeued_goes_behind_calls_already_in_its_new_level() -> None:
    queue = get_policy("mlfq")
    queue.add(call("runner", "R"), now=0.0)
    admit(queue, now=0.0)
    queue.add(call("waiter", "W"), now=0.1)
    queue.record_service("runner", 0.5, now=0.5)  # -> level 1
    queue.requeue("runner", now=0.5)
    assert queue.waiting_order() == ("waiter", "runner")


def test_requeued_call_returns_to_its_old_place() -> None:
    queue = plas()
    for i in range(3):
        queue.add(call(f"c{i}", f"P{i}"), now=0.0)
    assert admit(queue, now=0.0) == ["c0"]
    queue.add(call("late", "L"), now=0.1)
    assert queue.requeue("c0", now=0.2)
    assert queue.waiting_order() == ("c0", "c1", "c2", "late")
    assert queue.requeue("c0", now=0.3) is False  # already waiting


# ----- preemption: the same ordering, worst first -------------------------------------------------------


def _engine_with_three_running() -> MultiLevelQueue:
    queue = plas()
    queue.add(call("r0", "A", service=0.0), now=0.0)  # level 0
    queue.add(call("r3", "B", service=3.0), now=0.0)  # level 3
    queue.add(call("r5", "C", service=10.0), now=0.0)  # level 5
    plan = queue.schedule_batch(now=0.0, fits=CapacityBudget(3))
    assert plan.batch == ("r0", "r3", "r5") and plan.preempted == ()
    queue.add(call("w1", "D", service=0.7), now=1.0)  # level 1: outranks r3 and r5
    return queue


@pytest.mark.parametrize(
    ("room", "batch", "preempted"),
    [
        (4, ("r0", "w1", "r3", "r5"), ()),
        (3, ("r0", "w1", "r3"), ("r5",)),
        (2, ("r0", "w1"), ("r5", "r3")),
    ],
)
def test_schedule_batch_preempts_worst_running_calls_for_a_better_waiting_one(
    room: int, batch: tuple[str, ...], preempted: tuple[str, ...]
) -> None:
    queue = _engine_with_three_running()
    assert queue.preemption_order() == ("r5", "r3", "r0")
    plan = queue.schedule_batch(now=1.0, fits=CapacityBudget(room))
    assert plan.batch == batch
    assert plan.preempted == preempted
    assert [a.call_id for a in plan.admitted] == ["w1"]
    assert set(queue.running_ids()) == set(batch)
    assert set(queue.waiting_order()) == set(preempted)
    assert queue.snapshot().requeued == len(preempted)


def test_schedule_batch_keeps_running_calls_when_waiting_ones_rank_lower() -> None:
    queue = _engine_with_three_running()
    queue.remove("w1", now=1.0)
    queue.add(call("w9", "E", service=50.0), now=1.0)  # bottom level
    plan = queue.schedule_batch(now=1.5, fits=CapacityBudget(3))
    assert plan.batch == ("r0", "r3", "r5")
    assert plan.preempted == () and plan.admitted == () and plan.blocked_by == "w9"


# ----- anti-starvation -----------------------------------------------------------------------------------


def test_starved_call_is_promoted_behind_a_stream_of_fresh_calls() -> None:
    queue = plas(beta=2.0)
    queue.add(call("old", "X", service=1.5), now=0.0)  # level 2; due when W >= 2 * 1.5 = 3 s
    admitted: dict[str, float] = {}
    for step in range(10):
        now = step * 0.5
        queue.add(call(f"fresh{step}", f"F{step}"), now=now)  # a fresh program each time: level 0
        for admission in queue.select_admissions(now, CapacityBudget(1)):
            admitted[admission.call_id] = now
            queue.finish(admission.call_id, now=now)
        events = queue.tick(now)
        if now < 3.0:
            assert events.promotions == ()
        elif now == 3.0:
            (promotion,) = events.promotions
            assert (promotion.call_id, promotion.from_level, promotion.ratio) == ("old", 2, 2.0)
    # promoted at t=3.0 to the tail of the top level (behind fresh6), admitted at the next step
    assert admitted["old"] == 3.5
    assert admitted["fresh6"] == 3.0 and admitted["fresh7"] == 4.0
    assert queue.snapshot().promoted == 1


def test_promotion_resets_only_the_calls_own_counters() -> None:
    queue = get_policy("mlfq", {"beta": 4.0})
    assert isinstance(queue, MultiLevelQueue)
    queue.add(call("c", "P", service=0.0, wait=0.0), now=0.0)
    admit(queue, now=0.0)
    queue.record_service("c", 0.5, now=0.5)  # -> level 1, T_c = 0.5
    queue.requeue("c", now=1.0)  # due at 1.0 + 4 * 0.5 = 3.0
    assert queue.tick(2.99).promotions == ()
    assert [p.call_id for p in queue.tick(3.0).promotions] == ["c"]
    record = queue.get("c")
    assert record is not None
    assert (record.level, record.call_wait, record.call_service, record.quantum_used) == (0, 0.0, 0.0, 0.0)
    assert (record.total_wait, record.total_service) == (2.0, 0.5)
    assert (record.program_service, record.program_wait, record.promotions) == (0.0, 0.0, 1)
    assert record.total_wait_at(4.0) == 3.0


def test_program_wait_counts_towards_promotion() -> None:
    queue = plas(beta=2.0)
    queue.add(call("c", "P", service=1.0, wait=1.5), now=0.0)  # needs W_p + W_c >= 2: 0.5 s more
    assert queue.tick(0.49).promotions == ()
    assert [p.call_id for p in queue.tick(0.5).promotions] == ["c"]


def test_promotion_applies_before_admission_and_is_reported_at_next_tick() -> None:
    queue = plas(beta=2.0)
    queue.add(call("starved", "X", service=1.0), now=0.0)
    queue.add(call("fresh", "F"), now=1.9)
    assert admit(queue, now=2.0) == ["fresh"]  # 'starved' promoted at 2.0, to the tail of level 0
    assert admit(queue, now=2.0) == ["starved"]
    assert [p.call_id for p in queue.tick(2.0).promotions] == ["starved"]
    assert queue.tick(2.0).promotions == ()


@pytest.mark.parametrize(
    ("served", "waited", "ratio"),
    [(0.0, 0.0, 0.0), (0.0, 0.5, 5.0), (0.05, 0.5, 5.0), (1.0, 0.5, 0.5)],
)
def test_zero_service_guard_uses_the_service_floor(served: float, waited: float, ratio: float) -> None:
    queue = plas(service_floor=0.1)
    queue.add(call("c", "P", service=served, wait=waited), now=0.0)
    record = queue.get("c")
    assert record is not None
    assert queue.starvation_ratio(record, now=0.0) == pytest.approx(ratio)


def test_tiny_service_below_the_top_waits_beta_times_floor_not_zero() -> None:
    queue = plas(boundaries=[0, 1e-6], beta=10.0, service_floor=0.1)
    queue.add(call("c", "P", service=2e-6), now=0.0)  # level 1 with almost no service
    assert queue.tick(0.5).promotions == ()  # a literal ratio would have promoted it long ago
    assert [p.call_id for p in queue.tick(1.0).promotions] == ["c"]


def test_beta_none_never_promotes() -> None:
    queue = plas(beta=None)
    queue.add(call("c", "P", service=100.0), now=0.0)
    assert queue.tick(1e9).promotions == ()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"boundaries": [1, 2]}, "start at 0"),
        ({"boundaries": [0, 2, 2]}, "strictly increasing"),
        ({"quanta": [1, 2]}, "one per level"),
        ({"quanta": [1, 1, 1, 1, 1, 1, 1, 0]}, "> 0"),
        ({"beta": 0}, "beta"),
        ({"service_floor": -1}, "service_floor"),
        ({"beta": "high"}, "number"),
        ({"quantum": [1]}, "unknown parameter"),
    ],
)
def test_bad_parameters_are_clear_value_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_policy("plas", params)
