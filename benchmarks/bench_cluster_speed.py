"""Speed of the discrete-event cluster simulation: simulated seconds per wall second.

Runs each workload through each system on one A100 8B engine for ``--duration`` simulated seconds of
arrivals (clock stopped at 3x that) and prints wall time, events and simulated s per wall s; writes
results/bench_cluster_speed.json. The first run of a workload includes tokenising its messages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autellix.loadgen.arrivals import make_workload
from autellix.loadgen.sweep import pool_size, programs_for_rate
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import TokenCache
from autellix.simulator.cluster_systems import get_system

RATES = {"sharegpt": 0.1, "bfcl": 1.0, "lats": 0.1, "mixed": 0.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--workload", action="append")
    parser.add_argument("--system", action="append")
    parser.add_argument("--out", default="results/bench_cluster_speed.json")
    args = parser.parse_args()
    rows = []
    for workload in args.workload or list(RATES):
        rate = RATES.get(workload, 0.2)
        pool = make_workload(workload, pool_size(rate, args.duration), 1.0, 0)
        programs = programs_for_rate(pool, rate, 0, args.duration)
        tokens = TokenCache()
        for name in args.system or ["vllm-opt", "autellix"]:
            start = time.perf_counter()
            result = simulate(
                programs, get_system(name), ClusterConfig(max_time=3 * args.duration), tokens=tokens
            )
            wall = time.perf_counter() - start
            row = {
                "workload": workload, "rate": rate, "system": name, "programs": len(programs),
                "sim_seconds": result.end_time, "wall_seconds": wall, "events": result.events,
                "sim_per_wall": result.end_time / wall,
                "mean_token_latency": result.summary.token_latency.mean,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{workload:9s} {name:10s} rate {rate:<5g} programs {len(programs):5d}"
                f"  sim {result.end_time:8.1f} s"
                f"  wall {wall:6.2f} s  {result.end_time / wall:7.1f} sim-s/wall-s  events {result.events}"
            )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"duration": args.duration, "runs": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
