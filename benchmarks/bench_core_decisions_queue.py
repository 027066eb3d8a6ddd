"""Cost of the local queue's decisions at 10k queued calls, for every registered queue policy.

Figures (microseconds, median of ``--repeats`` runs):

- ``decision``: one ``add`` of a new call plus one ``select_admissions`` that admits one call (the
  sidecar's hot path; target < 20 us);
- ``cycle``: the same plus ``record_service`` and ``finish`` of the admitted call (steady state);
- ``tick``: a timer tick with nothing due (anti-starvation costs nothing per waiting call);
- ``batch_step``: ``schedule_batch`` with ``--running`` running calls and the queue behind them
  (the engine-integrated mode of the simulation, one decode step with its service reported).

Run: ``.venv/bin/python benchmarks/bench_core_decisions_queue.py [--queued 10000] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from autellix.engine_adapters.scheduling import (
    CapacityBudget,
    QueuedCall,
    QueuePolicy,
    get_policy,
    policy_names,
)

TARGET_US = 20.0


def make_call(rng: random.Random, i: int) -> QueuedCall:
    service = rng.choice([0.0, 0.0, rng.uniform(0, 2), rng.expovariate(1 / 10)])  # many fresh programs
    return QueuedCall(
        f"c{i}",
        f"p{i % 2000}",
        program_service=service,
        program_wait=rng.uniform(0, service),
        size=rng.randint(50, 2000),
        remaining_work=rng.uniform(0.3, 9.0),
    )


def filled(name: str, queued: int, seed: int) -> tuple[QueuePolicy, random.Random]:
    rng = random.Random(seed)
    queue = get_policy(name)
    for i in range(queued):
        queue.add(make_call(rng, i), now=0.0)
    return queue, rng


def per_op_us(elapsed: float, count: int) -> float:
    return elapsed / count * 1e6


def bench_decision(name: str, queued: int, ops: int, seed: int) -> float:
    queue, rng = filled(name, queued, seed)
    calls = [make_call(rng, queued + i) for i in range(ops)]
    now = 1.0
    start = time.perf_counter()
    for new_call in calls:
        queue.add(new_call, now)
        queue.select_admissions(now, CapacityBudget(1))
        now += 0.001
    return per_op_us(time.perf_counter() - start, ops)


def bench_cycle(name: str, queued: int, ops: int, seed: int) -> float:
    queue, rng = filled(name, queued, seed)
    calls = [make_call(rng, queued + i) for i in range(ops)]
    now = 1.0
    start = time.perf_counter()
    for new_call in calls:
        queue.add(new_call, now)
        for admission in queue.select_admissions(now, CapacityBudget(1)):
            queue.record_service(admission.call_id, 0.2, now)
            queue.finish(admission.call_id, now)
        now += 0.001
    return per_op_us(time.perf_counter() - start, ops)


def bench_tick(name: str, queued: int, ops: int, seed: int) -> float:
    queue, _ = filled(name, queued, seed)
    start = time.perf_counter()
    for i in range(ops):
        queue.tick(1e-6 * i)  # nothing becomes due this early
    return per_op_us(time.perf_counter() - start, ops)


def bench_batch_step(name: str, queued: int, running: int, steps: int, seed: int) -> float:
    queue, _ = filled(name, queued, seed)
    queue.schedule_batch(0.0, CapacityBudget(running))
    now = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        now += 0.02
        for call_id in queue.running_ids():
            queue.record_service(call_id, 0.02, now)
        queue.schedule_batch(now, CapacityBudget(running))
    return per_op_us(time.perf_counter() - start, steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queued", type=int, default=10_000, help="calls waiting in the queue")
    parser.add_argument("--ops", type=int, default=20_000, help="decisions timed per run")
    parser.add_argument("--running", type=int, default=256, help="running calls in the batch_step figure")
    parser.add_argument("--steps", type=int, default=300, help="engine steps timed per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", nargs="*", default=list(policy_names()), help="default: all registered")
    parser.add_argument("--out", type=Path, default=Path("results/bench_core_decisions_queue.json"))
    args = parser.parse_args()

    def median(bench: Callable[..., float], *bench_args: object) -> float:
        return statistics.median(bench(*bench_args, args.seed + r) for r in range(args.repeats))

    results: dict[str, dict[str, float]] = {}
    print(f"queue policies at {args.queued} queued calls (median of {args.repeats} runs, microseconds)")
    print(
        f"{'policy':<8} {'decision':>9} {'cycle':>9} {'tick':>9} {'batch_step':>11}  target<{TARGET_US:g}us"
    )
    for name in args.policies:
        figures = {
            "decision_us": median(bench_decision, name, args.queued, args.ops),
            "cycle_us": median(bench_cycle, name, args.queued, args.ops),
            "tick_us": median(bench_tick, name, args.queued, args.ops),
            "batch_step_us": median(bench_batch_step, name, args.queued, args.running, args.steps),
        }
        results[name] = figures
        verdict = "ok" if figures["decision_us"] < TARGET_US else "OVER"
        print(
            f"{name:<8} {figures['decision_us']:>9.2f} {figures['cycle_us']:>9.2f} {figures['tick_us']:>9.2f}"
            f" {figures['batch_step_us']:>11.1f}  {verdict}"
        )
    report = {
        "benchmark": "core_decisions_queue",
        "queued": args.queued,
        "running_in_batch_step": args.running,
        "repeats": args.repeats,
        "target_decision_us": TARGET_US,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "policies": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
