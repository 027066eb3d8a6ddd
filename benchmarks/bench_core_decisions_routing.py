"""Per-decision cost of the pure routing core and of the in-memory program table.

Measures ``route()`` of every registered router over a fleet of ``--engines`` engines (64 by default;
target: < 20 µs per decision), and one ``start_call`` + ``finish_call`` pair on a MemoryProgramTable
holding ``--programs`` programs (10k by default). Inputs are generated before timing from a seeded
generator; each figure is the best of ``--repeats`` timed runs (the least disturbed by the machine).

    .venv/bin/python benchmarks/bench_core_decisions_routing.py [--engines 64] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autellix.proxy.programs import CallFinish, CallStart, MemoryProgramTable
from autellix.proxy.routing import EngineView, RouteRequest, get_router, router_names

TARGET_US = 20.0
SYSTEM_PROMPTS = [
    f"System prompt {i}: you are agent {i}; follow the tool protocol carefully. " * 16 for i in range(4)
]


def make_fleets(rng: random.Random, engines: int, variants: int = 16) -> list[list[EngineView]]:
    return [
        [
            EngineView(
                f"engine-{i}",
                outstanding=rng.randrange(0, 40),
                waiting=rng.randrange(0, 10),
                running=rng.randrange(0, 64),
                kv_usage=rng.random(),
            )
            for i in range(engines)
        ]
        for _ in range(variants)
    ]


def make_requests(rng: random.Random, engines: int, count: int, programs: int = 1000) -> list[RouteRequest]:
    """A chat/agent mix: 60% short calls, 40% long; half the programs are pinned; growing histories."""
    turns = [0] * programs
    requests: list[RouteRequest] = []
    for _ in range(count):
        p = rng.randrange(programs)
        turns[p] += 1
        history = f"program {p} turn text with tool results and answers. " * (8 * min(turns[p], 12))
        requests.append(
            RouteRequest(
                program_id=f"program-{p}",
                thread_id=None,
                input_tokens=rng.randrange(100, 2048) if rng.random() < 0.6 else rng.randrange(2049, 16000),
                prefix=SYSTEM_PROMPTS[p % 4] + history,
                pinned_engine=f"engine-{p % engines}" if p % 2 == 0 else None,
                now=float(len(requests)),
            )
        )
    return requests


def time_router(
    name: str, fleets: list[list[EngineView]], requests: list[RouteRequest], repeats: int
) -> list[float]:
    runs = []
    for _ in range(repeats):
        router = get_router(name)
        for request in requests[:500]:  # warm up: fills caches, rings and prefix trees
            router.route(request, fleets[0])
        n_fleets = len(fleets)
        start = time.perf_counter()
        for i, request in enumerate(requests):
            router.route(request, fleets[i % n_fleets])
        runs.append((time.perf_counter() - start) / len(requests) * 1e6)
    return runs


def time_table(programs: int, ops: int, repeats: int, seed: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        rng = random.Random(seed)
        table = MemoryProgramTable()
        for p in range(programs):  # every program has a history, as in steady state
            table.start_call(CallStart(f"program-{p}", "warm", f"engine-{p % 64}"), now=0.0)
            table.finish_call(CallFinish(f"program-{p}", "warm", exec_time=1.0), now=1.0)
        picks = [(f"program-{rng.randrange(programs)}", f"engine-{rng.randrange(64)}") for _ in range(ops)]
        start = time.perf_counter()
        for n, (program, engine) in enumerate(picks):
            now = 2.0 + n
            table.start_call(CallStart(program, f"c{n}", engine, input_tokens=3000, pin=n % 3 == 0), now)
            table.finish_call(CallFinish(program, f"c{n}", exec_time=0.5, queue_wait=0.1), now + 0.5)
        runs.append((time.perf_counter() - start) / ops * 1e6)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=int, default=64, help="fleet size (default 64)")
    parser.add_argument("--decisions", type=int, default=20000, help="timed route() calls per router and run")
    parser.add_argument("--programs", type=int, default=10000, help="programs in the table (default 10k)")
    parser.add_argument("--table-ops", type=int, default=50000, help="timed start+finish pairs per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench_core_decisions_routing.json"))
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    fleets = make_fleets(rng, args.engines)
    requests = make_requests(rng, args.engines, args.decisions)
    prompt_chars = [len(r.prefix) for r in requests]
    print(f"route() per decision, {args.engines} engines, {args.decisions} decisions, best of {args.repeats}")
    median_chars = statistics.median(prompt_chars)
    print(f"(prompts for prefix affinity: median {median_chars:.0f} chars, max {max(prompt_chars)})")
    routers: dict[str, Any] = {}
    for name in router_names():
        runs = time_router(name, fleets, requests, args.repeats)
        best = min(runs)
        routers[name] = {"us_per_decision": round(best, 2), "runs_us": [round(r, 2) for r in runs]}
        verdict = "ok" if best < TARGET_US else f"over the {TARGET_US:g} µs target"
        print(f"  {name:18s} {best:7.2f} µs/decision   {verdict}")

    # the same router without prompts: its fixed, per-engine part (the rest grows with prompt blocks)
    bare = [dataclasses.replace(request, prefix="") for request in requests]
    fixed = min(time_router("prefix_affinity", fleets, bare, args.repeats))
    routers["prefix_affinity"]["us_per_decision_without_prompt"] = round(fixed, 2)
    print(f"  {'(prefix_affinity, no prompt: fixed part)':40s} {fixed:7.2f} µs/decision")

    table_runs = time_table(args.programs, args.table_ops, args.repeats, args.seed)
    table_best = min(table_runs)
    print(
        f"MemoryProgramTable, {args.programs} programs: start_call + finish_call {table_best:.2f} µs per pair"
    )

    report = {
        "benchmark": "core_decisions_routing",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "engines": args.engines,
        "decisions": args.decisions,
        "repeats": args.repeats,
        "seed": args.seed,
        "target_us_per_route": TARGET_US,
        "prompt_chars_median": median_chars,
        "routers": routers,
        "program_table": {
            "programs": args.programs,
            "ops": args.table_ops,
            "us_per_start_finish_pair": round(table_best, 2),
            "runs_us": [round(r, 2) for r in table_runs],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
