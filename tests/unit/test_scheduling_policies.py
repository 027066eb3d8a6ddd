"""SRPT and FCFS specifics, the capacity budget, the registry and parameter parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import yaml

from autellix.engine_adapters.scheduling import (
    CapacityBudget,
    MultiLevelQueue,
    QueuedCall,
    QueuePolicy,
    build_params,
    get_policy,
    policy_class,
    register_policy,
)


def call(call_id: str, work: float | None = None, size: int = 1, service: float = 0.0) -> QueuedCall:
    return QueuedCall(call_id, f"prog-{call_id}", program_service=service, size=size, remaining_work=work)


def admitted(queue: QueuePolicy, now: float, calls: int) -> list[str]:
    return [a.call_id for a in queue.select_admissions(now, CapacityBudget(calls))]


# ----- srpt ------------------------------------------------------------------------------------------------


def test_srpt_admits_by_remaining_work() -> None:
    queue = get_policy("srpt")
    for call_id, work in [("five", 5.0), ("one", 1.0), ("three", 3.0), ("one-later", 1.0)]:
        queue.add(call(call_id, work), now=0.0)
    assert admitted(queue, now=1.0, calls=4) == ["one", "one-later", "three", "five"]


def test_srpt_counts_service_already_received() -> None:
    queue = get_policy("srpt")
    queue.add(call("long", 4.0), now=0.0)
    assert admitted(queue, now=0.0, calls=1) == ["long"]
    queue.record_service("long", 3.0, now=3.0)  # 1 s left
    queue.add(call("two", 2.0), now=3.0)
    plan = queue.schedule_batch(now=3.0, fits=CapacityBudget(1))
    assert (plan.batch, plan.preempted, plan.blocked_by) == (("long",), (), "two")
    queue.add(call("half", 0.5), now=3.0)  # shorter than what 'long' has left: it preempts
    plan = queue.schedule_batch(now=3.0, fits=CapacityBudget(1))
    assert (plan.batch, plan.preempted) == (("half",), ("long",))
    assert queue.waiting_order() == ("long", "two")


def test_srpt_rejects_calls_without_remaining_work() -> None:
    queue = get_policy("srpt")
    with pytest.raises(ValueError, match="remaining_work"):
        queue.add(call("x", None), now=0.0)
    with pytest.raises(ValueError, match="remaining_work"):
        queue.add(call("y", math.nan), now=0.0)


# ----- fcfs ------------------------------------------------------------------------------------------------


def test_fcfs_ignores_service_and_puts_preempted_calls_back_in_front() -> None:
    queue = get_policy("fcfs")
    queue.add(call("first", service=100.0), now=0.0)
    queue.add(call("second", service=0.0), now=1.0)
    assert admitted(queue, now=2.0, calls=1) == ["first"]
    assert queue.record_service("first", 1000.0, now=3.0) is None  # one level: never demoted
    queue.add(call("third"), now=3.0)
    queue.requeue("first", now=4.0)
    assert queue.waiting_order() == ("first", "second", "third")
    assert queue.tick(1e6).promotions == ()


# ----- the capacity budget ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "size", "sizes", "taken"),
    [
        (2, None, [5, 5, 5], [True, True, False]),
        (5, 10, [4, 6, 1], [True, True, False]),
        (5, 10, [4, 7, 1], [True, False, True]),  # the budget itself does not stop; the queue does
        (0, None, [1], [False]),
    ],
)
def test_capacity_budget(calls: int, size: int | None, sizes: list[int], taken: list[bool]) -> None:
    budget = CapacityBudget(calls, size)
    assert [budget(call(f"c{i}", size=s)) for i, s in enumerate(sizes)] == taken


# ----- the clock and bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plas", "mlfq"])
def test_waiting_and_running_calls_are_not_confused(name: str) -> None:
    queue = get_policy(name)
    queue.add(call("w"), now=0.0)
    with pytest.raises(ValueError, match="waiting"):
        queue.record_service("w", 1.0, now=1.0)
    with pytest.raises(ValueError, match="remove"):
        queue.finish("w", now=1.0)
    with pytest.raises(ValueError, match="service seconds"):
        queue.record_service("w", -1.0, now=1.0)
    with pytest.raises(ValueError, match="program_service"):
        queue.add(QueuedCall("neg", "P", program_service=-1.0), now=1.0)
    with pytest.raises(ValueError, match="finite"):
        queue.tick(math.inf)


def test_remove_keeps_the_wait_measured_so_far() -> None:
    queue = get_policy("plas")
    queue.add(call("c"), now=1.0)
    removed = queue.remove("c", now=4.0)
    assert removed is not None and removed.total_wait == 3.0 and removed.call_wait == 3.0
    assert queue.snapshot().removed == 1 and "c" not in queue


# ----- registry and parameters -----------------------------------------------------------------------------


def test_yaml_parameters_become_params() -> None:
    text = """
    boundaries: [0, 1, 4, 16]
    quanta: [1, 3, 12, .inf]
    beta: 8
    service_floor: 0.05
    """
    queue = get_policy("atlas", yaml.safe_load(text))
    assert isinstance(queue, MultiLevelQueue)
    assert queue.params == policy_class("atlas").Params(
        boundaries=(0.0, 1.0, 4.0, 16.0), quanta=(1.0, 3.0, 12.0, math.inf), beta=8.0, service_floor=0.05
    )
    assert queue.num_levels == 4 and queue.quantum(1) == 3.0
    assert get_policy("plas", {"beta": None, "quanta": None}).params.beta is None
    assert get_policy("plas", {"quanta": [1, 1, 1, 1, 1, 1, 1, "inf"]}).params.quanta[-1] == math.inf


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "plas",
            {"betta": 3},
            r"unknown parameter\(s\) betta; valid: boundaries, quanta, beta, service_floor",
        ),
        ("srpt", {"x": 1}, r"valid: \(none\)"),
        ("plas", [("beta", 1)], "must be a mapping"),
        ("plas", {"boundaries": 3}, "must be a list"),
        ("plas", {"beta": True}, "must be a number"),
        ("nope", None, "unknown queue policy 'nope'; known: atlas, fcfs, mlfq, plas, program-fcfs, srpt"),
    ],
)
def test_bad_policy_requests_are_clear_value_errors(name: str, params: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_policy(name, params)


def test_each_policy_instance_is_independent() -> None:
    first, second = get_policy("plas"), get_policy("plas")
    first.add(call("c"), now=0.0)
    assert len(first) == 1 and len(second) == 0


def test_registering_a_name_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @register_policy("plas")
        class Impostor(MultiLevelQueue):
            @dataclass(frozen=True, slots=True)
            class Params:
                pass


def test_build_params_checks_types_of_other_fields() -> None:
    @dataclass(frozen=True, slots=True)
    class Knobs:
        count: int = 1
        enabled: bool = False

    assert build_params(Knobs, {"count": 3, "enabled": True}) == Knobs(3, True)
    with pytest.raises(ValueError, match="integer"):
        build_params(Knobs, {"count": 1.5})
    with pytest.raises(ValueError, match="true or false"):
        build_params(Knobs, {"enabled": "yes"})
