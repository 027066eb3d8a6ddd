"""Every registered queue policy through the same checks, plus property tests of the queue invariants.

Policies are taken from the registry, so a new policy is checked here without editing this file.
"""

from __future__ import annotations

import random
from dataclasses import astuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine_adapters.scheduling import (
    BatchPlan,
    CapacityBudget,
    QueuedCall,
    QueuePolicy,
    get_policy,
    policy_names,
)
from autellix.engine_adapters.scheduling.multilevel import MultiLevelQueue

POLICIES = policy_names()
Op = tuple[Any, ...]


def call(i: int, service: float = 0.0, wait: float = 0.0, size: int = 1, work: float = 1.0) -> QueuedCall:
    return QueuedCall(
        f"c{i:03d}", f"p{i % 4}", program_service=service, program_wait=wait, size=size, remaining_work=work
    )


def check_invariants(queue: QueuePolicy, live: set[str], now: float) -> None:
    waiting, running = queue.waiting_order(), queue.running_ids()
    assert len(set(waiting)) == len(waiting) and len(set(running)) == len(running)
    assert not set(waiting) & set(running)
    assert set(waiting) | set(running) == live
    stats = queue.snapshot()
    assert stats.waiting == len(waiting) and stats.running == len(running)
    for call_id in live:
        record = queue.get(call_id)
        assert record is not None and 0 <= record.level < queue.num_levels
        assert record.running == (call_id in running)
    for level in range(queue.num_levels):
        assert stats.waiting_per_level[level] == sum(queue.get(c).level == level for c in waiting)  # type: ignore[union-attr]
    keys = [queue.order_key(queue.get(c)) for c in live]  # type: ignore[arg-type]
    assert len(set(keys)) == len(keys)  # total order: no two live calls tie


def check_starvation_bounded(queue: QueuePolicy, now: float) -> None:
    """Right after a tick or an admission, no waiting call below the top has reached beta."""
    if not isinstance(queue, MultiLevelQueue) or queue.ladder.beta is None:
        return
    for call_id in queue.waiting_order():
        record = queue.get(call_id)
        assert record is not None
        if record.level > 0:
            assert queue.starvation_ratio(record, now) < queue.ladder.beta + 1e-9


def run(queue: QueuePolicy, ops: list[Op], offset: float = 0.0) -> list[Any]:
    """Apply ``ops`` (each starts with a time step) on a virtual clock; return every decision made."""
    now, live, next_id, trace = offset, set[str](), 0, list[Any]()
    for step, name, *args in ops:
        now += step
        running = sorted(queue.running_ids())
        targets = sorted(live)
        if name == "add":
            service, wait, size, work = args
            queue.add(call(next_id, service, wait, size, work), now)
            live.add(f"c{next_id:03d}")
            next_id += 1
            result: Any = None
        elif name == "select":
            result = queue.select_admissions(now, CapacityBudget(args[0], args[1]))
            check_starvation_bounded(queue, now)
        elif name == "batch":
            # calls it preempts start waiting only now: they are promoted at the next decision or tick
            result = queue.schedule_batch(now, CapacityBudget(args[0], args[1]))
        elif name == "tick":
            result = queue.tick(now)
            check_starvation_bounded(queue, now)
        elif name in ("service", "requeue", "finish") and running:
            target = running[args[0] % len(running)]
            if name == "service":
                result = queue.record_service(target, args[1], now)
            elif name == "requeue":
                result = queue.requeue(target, now)
            else:
                finished = queue.finish(target, now)
                assert finished is not None and finished.call_id == target
                live.discard(target)
                result = (target, finished.total_wait, finished.total_service)
        elif name == "remove" and targets:
            target = targets[args[0] % len(targets)]
            removed = queue.remove(target, now)
            assert removed is not None and removed.call_id == target
            live.discard(target)
            result = target
        else:
            result = None
        check_invariants(queue, live, now)
        trace.append((name, result if not isinstance(result, BatchPlan) else astuple(result)))
    trace.append(("stats", queue.snapshot()))
    return trace


KINDS = ["add", "add", "select", "batch", "service", "service", "requeue", "finish", "remove"]


def random_script(seed: int, length: int = 200) -> list[Op]:
    """Dyadic times and services keep float arithmetic exact, so time-shifted replays compare equal."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(length):
        step = rng.randrange(0, 8) / 8
        kind = rng.choice(KINDS)
        if kind == "add":
            args: tuple[Any, ...] = (
                rng.randrange(0, 160) / 4,
                rng.randrange(0, 40) / 4,
                rng.randrange(1, 4),
                2.0,
            )
        elif kind in ("select", "batch"):
            args = (rng.randrange(0, 4), rng.choice([None, 2, 5]))
        elif kind == "service":
            args = (rng.randrange(0, 8), rng.randrange(0, 16) / 8)
        else:
            args = (rng.randrange(0, 8),)
        ops.append((step, kind, *args))
        if rng.random() < 0.2:
            ops.append((0.0, "tick"))
    return ops


# ----- conformance: every registered policy ------------------------------------------------------------


def test_the_registry_knows_the_paper_policies() -> None:
    assert {"fcfs", "mlfq", "plas", "atlas", "srpt"} <= set(POLICIES)


@pytest.mark.parametrize("name", POLICIES)
def test_builds_from_none_empty_mapping_and_own_params(name: str) -> None:
    default = get_policy(name)
    assert default.name == name
    assert get_policy(name, {}).params == default.params
    assert get_policy(name, default.params).params == default.params
    with pytest.raises(ValueError, match="unknown parameter"):
        get_policy(name, {"no_such_knob": 1})


@pytest.mark.parametrize("name", POLICIES)
def test_empty_queue(name: str) -> None:
    queue = get_policy(name)
    assert queue.select_admissions(0.0, CapacityBudget(10)) == ()
    assert queue.schedule_batch(0.0, CapacityBudget(10)) == BatchPlan((), (), (), None)
    assert queue.tick(1.0).promotions == ()
    assert queue.preemption_order() == () and queue.waiting_order() == ()
    assert queue.finish("nope", 1.0) is None and queue.remove("nope", 1.0) is None
    assert queue.record_service("nope", 1.0, 1.0) is None and queue.requeue("nope", 1.0) is False
    assert len(queue) == 0 and queue.snapshot().waiting == 0


@pytest.mark.parametrize("name", POLICIES)
def test_one_call_lifecycle(name: str) -> None:
    queue = get_policy(name)
    queue.add(call(1, service=0.0, work=1.0), now=1.0)
    with pytest.raises(ValueError, match="already queued"):
        queue.add(call(1), now=1.0)
    assert queue.select_admissions(1.0, CapacityBudget(0)) == ()
    (admission,) = queue.select_admissions(3.0, CapacityBudget(1))
    assert (admission.call_id, admission.waited) == ("c001", 2.0)
    queue.record_service("c001", 0.25, now=3.25)
    done = queue.finish("c001", now=3.5)
    assert done is not None and (done.total_wait, done.total_service) == (2.0, 0.25)
    stats = queue.snapshot()
    assert (stats.added, stats.admitted, stats.finished, stats.waiting, stats.running) == (1, 1, 1, 0, 0)


@pytest.mark.parametrize("name", POLICIES)
def test_same_operations_give_same_decisions(name: str) -> None:
    script = random_script(seed=7)
    assert run(get_policy(name), script) == run(get_policy(name), script)


@pytest.mark.parametrize("name", POLICIES)
def test_follows_the_clock_it_is_given(name: str) -> None:
    script = random_script(seed=11)
    assert run(get_policy(name), script) == run(get_policy(name), script, offset=1024.0)
    queue = get_policy(name)
    queue.tick(5.0)
    with pytest.raises(ValueError, match="backwards"):
        queue.add(call(1), now=4.0)


@pytest.mark.parametrize("name", POLICIES)
def test_order_is_total_and_waiting_order_is_sorted_by_key(name: str) -> None:
    queue = get_policy(name)
    for i in range(40):  # many identical calls: only the sequence number can tell them apart
        queue.add(call(i, service=1.0, work=1.0), now=0.0)
    order = queue.waiting_order()
    keys = [queue.order_key(queue.get(c)) for c in order]  # type: ignore[arg-type]
    assert keys == sorted(keys) and len(set(keys)) == 40
    if name == "program-fcfs":  # FIFO by program age, then by call: p0's calls first, then p1's...
        assert order == tuple(f"c{i:03d}" for p in range(4) for i in range(p, 40, 4))
    else:
        assert order == tuple(f"c{i:03d}" for i in range(40))  # identical calls: FIFO


@pytest.mark.parametrize("name", POLICIES)
def test_admission_and_preemption_use_the_same_order(name: str) -> None:
    queue = get_policy(name)
    for i in range(6):
        queue.add(call(i, service=float(i), work=float(6 - i)), now=float(i))
    best_first = queue.waiting_order()
    admitted = [a.call_id for a in queue.select_admissions(10.0, CapacityBudget(6))]
    assert tuple(admitted) == best_first
    assert queue.preemption_order() == best_first[::-1]


# ----- properties ----------------------------------------------------------------------------------------

steps = st.integers(0, 12).map(lambda k: k / 8)
op = st.one_of(
    st.tuples(
        steps,
        st.just("add"),
        st.integers(0, 200).map(lambda k: k / 4),
        st.integers(0, 80).map(lambda k: k / 4),
        st.integers(1, 4),
        st.integers(0, 40).map(lambda k: k / 4),
    ),
    st.tuples(steps, st.sampled_from(["select", "batch"]), st.integers(0, 4), st.sampled_from([None, 3, 6])),
    st.tuples(steps, st.just("service"), st.integers(0, 9), st.integers(0, 40).map(lambda k: k / 8)),
    st.tuples(steps, st.sampled_from(["requeue", "finish", "remove"]), st.integers(0, 9)),
    st.tuples(steps, st.just("tick")),
)


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=60))
def test_random_operations_keep_every_call_exactly_once(name: str, ops: list[Op]) -> None:
    run(get_policy(name), ops)  # run() checks the invariants after every operation


@pytest.mark.parametrize("name", ["plas", "atlas", "mlfq"])
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=60), beta=st.sampled_from([0.5, 2.0, 10.0]))
def test_random_operations_are_deterministic_and_starvation_stays_bounded(
    name: str, ops: list[Op], beta: float
) -> None:
    first = run(get_policy(name, {"beta": beta}), ops)  # checks the beta bound after each decision point
    assert first == run(get_policy(name, {"beta": beta}), ops)
