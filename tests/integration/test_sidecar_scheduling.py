"""The sidecar's ordering, on loopback with real processes: ``autellix sidecar`` in front of ``autellix
sim-engine`` (unit profile, 10 ms per step, so a call of N tokens runs N steps = N x 10 ms).

Each scenario fills the engine with a blocker, queues calls behind it at known moments and reads the
order in which they complete; with one call in the engine at a time, completion order is admission order.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from autellix.engine_adapters import protocol
from tests.integration.conftest import SidecarFactory, SimEngineFactory, metric_value

pytestmark = pytest.mark.integration

UNIT = ("--profile", "unit", "--time-scale", "0.01")
ONE_AT_A_TIME = (
    "--engine-kind",
    "sim",
    "--window-mode",
    "fixed",
    "--max-in-flight",
    "1",
    "--tick-interval",
    "0.01",
)

Plan = list[tuple[float, str, dict[str, str], int]]  # (start offset s, name, headers, output tokens)


def program(
    program_id: str, service: float = 0.0, critical_path: float | None = None, thread: str | None = None
) -> dict[str, str]:
    headers = {
        protocol.PROGRAM_ID: program_id,
        protocol.PROGRAM_SERVICE: str(service),
        protocol.PROGRAM_CRITICAL_PATH: str(service if critical_path is None else critical_path),
    }
    if thread is not None:
        headers[protocol.THREAD_ID] = thread
    return headers


def completion_order(url: str, plan: Plan) -> list[str]:
    """Start each call at its offset from now; return names in the order their replies completed."""
    order: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    # One shared client (thread-safe): a client per call would spend tens of ms building its TLS context
    # and blur the arrival order the plan sets.
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=len(plan))) as http:
        http.get("/health")
        start = time.monotonic() + 0.05

        def call(offset: float, name: str, headers: dict[str, str], tokens: int) -> None:
            body = {"prompt": f"{name} says hello", "max_tokens": tokens, "ignore_eos": True}
            time.sleep(max(0.0, start + offset - time.monotonic()))
            reply = http.post("/v1/completions", json=body, headers=headers)
            with lock:
                (order if reply.status_code == 200 else failures).append(name)

        threads = [threading.Thread(target=call, args=step) for step in plan]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures
    return order


def test_plas_admits_a_short_program_ahead_of_a_long_programs_queue_and_fcfs_does_not(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT, "--max-num-seqs", "1")
    long_program = program("long", service=5.0)
    plan: Plan = [
        # The blocker runs 60 steps (0.6 s): the queued calls arrive well inside it even on a busy machine.
        (0.00, "long-0", long_program, 60),
        (0.05, "long-1", long_program, 5),
        (0.08, "long-2", long_program, 5),
        (0.11, "long-3", long_program, 5),
        (0.14, "short", program("short", service=0.0), 5),
    ]
    for scheduler, expected in [
        ("plas", ["long-0", "short", "long", "long", "long"]),
        ("fcfs", ["long-0", "long", "long", "long", "short"]),
    ]:
        sidecar = sidecar_factory(engine.url, *ONE_AT_A_TIME, "--scheduler", scheduler, name=scheduler)
        order = completion_order(sidecar.url, plan)
        # long-1..3 share a program and a level: on a busy host their arrivals may swap, which is not
        # what this test is about (where short goes is)
        assert [name if name in ("long-0", "short") else "long" for name in order] == expected, (
            scheduler,
            order,
        )


def test_atlas_moves_parallel_calls_of_one_program_together(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    # Program x ran threads in parallel: summed service 3 s, critical path 1 s. Program y is sequential.
    engine = sim_engine_factory(*UNIT, "--max-num-seqs", "1")
    plan: Plan = [
        (0.00, "blocker", program("b"), 20),
        (0.05, "x-1", program("x", service=3.0, critical_path=1.0, thread="t1"), 4),
        (0.08, "y", program("y", service=2.0), 4),
        (0.11, "x-2", program("x", service=3.0, critical_path=1.0, thread="t2"), 4),
        (0.14, "x-3", program("x", service=3.0, critical_path=1.0, thread="t3"), 4),
    ]
    for scheduler, expected in [
        ("atlas", ["x-1", "x-2", "x-3", "y"]),  # the critical path places x above y
        ("plas", ["x-1", "y", "x-2", "x-3"]),  # the PLAS sum puts x level with y: FIFO
    ]:
        sidecar = sidecar_factory(engine.url, *ONE_AT_A_TIME, "--scheduler", scheduler, name=scheduler)
        # On a loaded machine x-1 can reach the engine before the blocker; the blocker (service 0) then
        # runs next and still holds the rest in the queue, so only its own place varies.
        order = [name for name in completion_order(sidecar.url, plan) if name != "blocker"]
        assert order == expected, scheduler


def test_beta_promotes_a_starving_call(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    # heavy (service 4 s) waits below a stream of fresh programs' calls; with beta = 0.05 it is due for
    # promotion after 0.05 * 4 = 0.2 s of waiting, i.e. before the late calls arrive.
    engine = sim_engine_factory(*UNIT, "--max-num-seqs", "1")
    plan: Plan = [
        (0.00, "blocker", program("b"), 30),
        (0.03, "heavy", program("heavy", service=4.0), 5),
        (0.06, "early-1", program("e1"), 5),
        (0.08, "early-2", program("e2"), 5),
        (0.10, "early-3", program("e3"), 5),
        (0.35, "late-1", program("l1"), 5),
        (0.37, "late-2", program("l2"), 5),
        (0.39, "late-3", program("l3"), 5),
    ]
    late = {"late-1", "late-2", "late-3"}
    for beta, heavy_before_late in [(0.05, True), (None, False)]:
        sidecar = sidecar_factory(
            engine.url, *ONE_AT_A_TIME, config={"scheduler_params": {"beta": beta}}, name=f"beta-{beta}"
        )
        order = completion_order(sidecar.url, plan)
        heavy_at = order.index("heavy")
        assert order[:4] == ["blocker", "early-1", "early-2", "early-3"], order
        assert all((order.index(name) > heavy_at) is heavy_before_late for name in late), order
        promotions = metric_value(
            httpx.get(sidecar.url + "/metrics").text, "autellix_sidecar_promotions_total"
        )
        assert (promotions >= 1) is heavy_before_late


def test_priority_is_what_reorders_calls_inside_a_priority_engine(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    # Window 3 over a batch of 1: two of ours wait *inside* the engine. When the blocker ends the engine
    # starts long-1 at its very next step, before we even see the blocker's reply; our short program's
    # call (level 0) then enters the engine behind long-2 (level 4). Only the priority field lets it
    # overtake long-2 there, and only a priority engine may be sent one.
    plan: Plan = [
        (0.00, "long-0", program("long", service=5.0), 20),
        (0.03, "long-1", program("long", service=5.0), 5),
        (0.06, "long-2", program("long", service=5.0), 5),
        (0.09, "short", program("short"), 5),
    ]
    window = ("--engine-kind", "sim", "--window-mode", "fixed", "--max-in-flight", "3")
    for policy, flag, expected in [
        ("priority", "on", ["long-0", "long", "short", "long"]),
        ("fcfs", "off", ["long-0", "long", "long", "short"]),
    ]:
        engine = sim_engine_factory(*UNIT, "--max-num-seqs", "1", "--scheduling-policy", policy)
        sidecar = sidecar_factory(engine.url, *window, "--engine-priority", flag, name=policy)
        order = completion_order(sidecar.url, plan)
        # long-1 and long-2 are one program's calls at one level: on a busy host their two relays may
        # reach the engine in either order, and which of them short overtakes is not the point.
        assert [name if name in ("long-0", "short") else "long" for name in order] == expected, order


def test_adaptive_window_settles_at_the_engine_batch_plus_slack(
    sim_engine_factory: SimEngineFactory, sidecar_factory: SidecarFactory
) -> None:
    engine = sim_engine_factory(*UNIT, "--max-num-seqs", "3")
    sidecar = sidecar_factory(
        engine.url,
        "--engine-kind", "sim", "--initial-window", "1", "--overprovision", "1", "--probe-interval", "0.02",
    )  # fmt: skip
    plan: Plan = [(0.0, f"c{i}", program(f"p{i}"), 10) for i in range(18)]
    assert len(completion_order(sidecar.url, plan)) == 18
    text = httpx.get(sidecar.url + "/metrics").text
    assert metric_value(text, "autellix_sidecar_window_size") == 4
    assert metric_value(text, "autellix_sidecar_admissions_total") == 18
    assert metric_value(text, "autellix_sidecar_running") == 0
