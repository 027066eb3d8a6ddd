"""Live stack versus discrete-event simulation on the same seeded workload and systems.

For each arrival rate and each of the demo's two setups (baseline: FCFS sidecars, FCFS engines,
round robin; autellix: ATLAS sidecars, priority engines, locality router), runs the demo's mixed
workload once through real processes on loopback (simulated engines, sidecars, proxy, the live load
generator) and once through ``autellix.simulator.cluster.simulate`` with the same engine settings, and
prints the mean program token latency of both and their ratio (live / simulated), with the median, the
calls' mean TTFT, the pacing (client token gap / the engines' simulated token gap) and the load
generator's arrival lag (p95, wall ms; above ~50 ms the machine was busy and the live figures are noisy).

The target: within 15% at a moderate load (rate 1.0 with the defaults: engines busy, little queueing).
At overload (rate 2.0), queueing amplifies every small difference and one-token programs dominate the
mean (response time / 1 token), so the ratio there is reported, not expected to be tight.

Run: ``.venv/bin/python benchmarks/bench_live_vs_sim.py [--rates 1.0 2.0] [--programs 60]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autellix.demo import demo_programs, run_setup, setups
from autellix.demo_config import DemoSettings
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import TokenCache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=60)
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setup", choices=["baseline", "autellix", "both"], default="both")
    parser.add_argument("--out", default="results/bench_live_vs_sim.json")
    args = parser.parse_args()
    rows = []
    tokens = TokenCache()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-vs-sim-"))
    for rate in args.rates:
        settings = DemoSettings.model_validate(
            {
                "programs": args.programs,
                "rate": rate,
                "time_scale": args.time_scale,
                "max_num_seqs": args.max_num_seqs,
                "engines": args.engines,
                "seed": args.seed,
                "progress": False,
            }
        )
        programs = demo_programs(settings)
        config = ClusterConfig(
            num_engines=settings.engines,
            profile=settings.profile,
            max_num_seqs=settings.max_num_seqs,
            seed=settings.seed,
        )
        for setup in setups(settings):
            if args.setup not in ("both", setup.name):
                continue
            sim = simulate(programs, setup.preset, config, tokens=tokens)
            started = time.monotonic()
            live = run_setup(settings, setup, programs, log_dir)
            sim_by_id = {p.program_id: p for p in sim.programs}
            per_program = [
                lt / st
                for p in live.result.programs
                if (lt := p.token_latency) is not None and (st := sim_by_id[p.program_id].token_latency)
            ]
            ls, ss = live.result.summary, sim.summary
            row = {
                "rate": rate,
                "setup": setup.name,
                "live_mean": ls.token_latency.mean,
                "sim_mean": ss.token_latency.mean,
                "ratio_mean": ls.token_latency.mean / ss.token_latency.mean,
                "live_p50": ls.token_latency.p50,
                "sim_p50": ss.token_latency.p50,
                "ratio_p50": ls.token_latency.p50 / ss.token_latency.p50,
                "per_program_ratio_median": statistics.median(per_program) if per_program else None,
                "live_ttft_mean": ls.call_ttft.mean,
                "sim_ttft_mean": ss.call_ttft.mean,
                "live_makespan": ls.makespan,
                "sim_makespan": ss.makespan,
                "live_completed": f"{ls.programs_completed}/{ls.programs}",
                "pacing": live.pacing,
                "arrival_lag_p95": live.result.arrival_lag.p95,
                "errors": live.result.errors_by_kind,
                "wall_seconds": time.monotonic() - started,
            }
            rows.append(row)
            print(
                f"rate {rate:g} {setup.name:8}: mean s/token live {row['live_mean']:.4f} sim "
                f"{row['sim_mean']:.4f} ratio {row['ratio_mean']:.3f} | median live {row['live_p50']:.4f} "
                f"sim {row['sim_p50']:.4f} ratio {row['ratio_p50']:.3f} | per-program ratio median "
                f"{row['per_program_ratio_median']:.3f} | TTFT live {row['live_ttft_mean']:.3f} s sim "
                f"{row['sim_ttft_mean']:.3f} s | done {row['live_completed']} | pacing {row['pacing']:.3f} "
                f"| lag p95 {row['arrival_lag_p95'] * 1000:.0f} ms",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"config": vars(args), "python": sys.version.split()[0], "rows": rows}, indent=2)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
