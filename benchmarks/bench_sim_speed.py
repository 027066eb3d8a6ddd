"""Speed of the discrete-event simulation, fast path against the per-step reference (issue 14 item 5).

Each case (workload, system, rate) runs ``--duration`` simulated seconds of arrivals on one A100 8B
engine, the clock stopped at 3x that (as ``autellix bench``), once with the engines' fast path
(``ClusterConfig.fast_decode``, the default) and once with the per-step walk, in fresh worker
processes, interleaved, ``--repeat`` times; the figure is the least CPU time of each. The workload's
generation and tokenisation are outside the timing (a sweep pays them once per workload). The two
results must be identical (a digest of every call, program and engine record); the script says so.

``--against DIR`` also runs every case with the ``autellix`` package found in ``DIR`` (a checkout of
an earlier commit, e.g. ``git worktree add /tmp/before c0ac84f``), the "before" of a change that
also sped up code both paths share. ``--sweep`` instead times the single-engine sweep of the issue
(4 workloads x 5 systems x 8 rates, fast path only), every ``--sweep-stride``-th rate of each grid,
and extrapolates the total. Writes results/bench_sim_speed.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CASES = (
    ("mixed", "vllm-opt", 2.0),
    ("mixed", "autellix", 2.0),
    ("sharegpt", "vllm-opt", 2.0),
    ("sharegpt", "autellix", 2.0),
    ("bfcl", "vllm-opt", 2.5),
    ("bfcl", "autellix", 2.5),
)
# The sweep: 5 systems, 8 rates per workload from light load to past vllm-opt's knee.
SWEEP_SYSTEMS = ("vllm", "vllm-opt", "mlfq", "autellix-las", "autellix")  # autellix bench's default
SWEEP_RATES = {
    "sharegpt": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0),
    "bfcl": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0),
    "lats": (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2),
    "mixed": (0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 2.5),
}


def worker(workload: str, systems: list[str], rates: list[float], duration: float, fast: bool) -> None:
    """One process: every (rate, system) run on the workload's programs; JSON lines on stdout."""
    from autellix.loadgen.arrivals import make_workload
    from autellix.loadgen.sweep import pool_size, programs_for_rate
    from autellix.simulator.cluster import ClusterConfig, simulate
    from autellix.simulator.cluster_prompts import ProgramPrompts, TokenCache
    from autellix.simulator.cluster_systems import get_system

    pool = make_workload(workload, pool_size(max(rates), duration), 1.0, 0)
    tokens = TokenCache()
    for program in pool:  # tokenise outside the timing, as a sweep does once per workload
        prompts = ProgramPrompts(program, tokens)
        for call in program.calls:
            prompts.prompt_ids(call)
    options: dict[str, Any] = {"max_time": 3 * duration}
    if "fast_decode" in {f.name for f in dataclasses.fields(ClusterConfig)}:
        options["fast_decode"] = fast
    for rate in rates:
        programs = programs_for_rate(pool, rate, 0, duration)
        for system in systems:
            cpu, wall = time.process_time(), time.perf_counter()
            result = simulate(programs, get_system(system), ClusterConfig(**options), tokens=tokens)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            records = [
                [dataclasses.astuple(c) for c in result.calls],
                [dataclasses.astuple(p) for p in result.programs],
                [dataclasses.astuple(e) for e in result.engines],
                result.end_time,
                result.events,
            ]
            digest = hashlib.sha1(json.dumps(records).encode()).hexdigest()
            row = {"workload": workload, "system": system, "rate": rate, "cpu": cpu, "wall": wall}
            row |= {"digest": digest, "events": result.events, "calls": len(result.calls)}
            print(json.dumps(row), flush=True)


def spawn(
    tree: str, workload: str, systems: list[str], rates: list[float], duration: float, fast: bool
) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=tree)
    command = [sys.executable, __file__, "--worker", workload, ",".join(systems), ",".join(map(str, rates))]
    command += [str(duration), "fast" if fast else "per-step"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def compare(args: argparse.Namespace, tree: str) -> dict[str, Any]:
    variants: list[tuple[str, str, bool]] = [("fast", tree, True), ("per-step", tree, False)]
    if args.against:
        variants.append(("before", args.against, True))
    rows = []
    for workload, system, rate in CASES:
        if args.workload and workload not in args.workload:
            continue
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
        for _ in range(args.repeat):
            for name, where, fast in variants:
                runs[name] += spawn(where, workload, [system], [rate], args.duration, fast)
        best = {name: min(r["cpu"] for r in got) for name, got in runs.items()}
        digests = {name: {r["digest"] for r in got} for name, got in runs.items()}
        same = len(set().union(*digests.values())) == 1
        row: dict[str, Any] = {"workload": workload, "system": system, "rate": rate, "cpu": best}
        row |= {"identical": same, "events": runs["fast"][0]["events"]}
        row["speedup_vs_per_step"] = best["per-step"] / best["fast"]
        line = f"{workload:9s} {system:9s} {rate:4g}/s  fast {best['fast']:7.1f} s"
        line += f"  per-step {best['per-step']:7.1f} s"
        line += f"  x{row['speedup_vs_per_step']:.2f}"
        if args.against:
            row["speedup_vs_before"] = best["before"] / best["fast"]
            line += f"  before {best['before']:7.1f} s  x{row['speedup_vs_before']:.2f}"
        print(line + ("" if same else "  RESULTS DIFFER"), flush=True)
        rows.append(row)
    totals = {name: sum(r["cpu"][name] for r in rows) for name, _, _ in variants}
    print("total cpu s: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))
    return {"cases": rows, "totals": totals}


def sweep(args: argparse.Namespace, tree: str) -> dict[str, Any]:
    """Each workload's picked rates in one worker (``--jobs`` workers at once, as ``autellix bench
    --jobs``); the estimate scales each workload's CPU time to all its rates, and divides the total by
    the workers."""
    from concurrent.futures import ThreadPoolExecutor

    plan = [(w, rates) for w, rates in SWEEP_RATES.items() if not args.workload or w in args.workload]
    picks = [list(rates[args.sweep_stride - 1 :: args.sweep_stride]) or [rates[-1]] for _, rates in plan]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(
            pool.map(
                lambda job: spawn(tree, job[0], list(SWEEP_SYSTEMS), job[1], args.duration, True),
                [(w, picked) for (w, _), picked in zip(plan, picks, strict=True)],
            )
        )
    elapsed = time.perf_counter() - start
    rows = []
    estimate = 0.0
    for (workload, rates), picked, got in zip(plan, picks, results, strict=True):
        cpu = sum(r["cpu"] for r in got)
        scaled = cpu * len(rates) / len(picked)
        estimate += scaled
        print(
            f"{workload:9s} {len(picked)} of {len(rates)} rates x {len(SWEEP_SYSTEMS)} systems: "
            f"sim cpu {cpu:.0f} s -> {scaled:.0f} s for all rates",
            flush=True,
        )
        rows += got
    print(f"wall {elapsed:.0f} s for the picked runs with {args.jobs} worker(s)")
    print(
        f"estimated full sweep: {estimate / 60:.1f} min of simulation CPU, "
        f"{estimate / 60 / args.jobs:.1f} min with {args.jobs} worker(s) (workload generation not counted)"
    )
    return {
        "runs": rows,
        "estimated_sweep_cpu_seconds": estimate,
        "stride": args.sweep_stride,
        "jobs": args.jobs,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        workload, systems, rates, duration, mode = sys.argv[2:7]
        worker(
            workload,
            systems.split(","),
            [float(r) for r in rates.split(",")],
            float(duration),
            mode == "fast",
        )
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="simulated seconds of arrivals per run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (the least CPU time counts)")
    parser.add_argument("--workload", action="append", help="only these workloads")
    parser.add_argument(
        "--against", help="also time the autellix package in this directory (an older checkout)"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="time the issue's sweep instead (fast path only)"
    )
    parser.add_argument("--sweep-stride", type=int, default=1, help="--sweep: every n-th rate, extrapolated")
    parser.add_argument("--jobs", type=int, default=1, help="--sweep: workloads in parallel workers")
    parser.add_argument("--out", default="results/bench_sim_speed.json")
    args = parser.parse_args()
    tree = str(Path(__file__).resolve().parent.parent)
    document: dict[str, Any] = {"duration": args.duration, "repeat": args.repeat, "against": args.against}
    document |= sweep(args, tree) if args.sweep else compare(args, tree)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
