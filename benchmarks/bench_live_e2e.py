"""Issue 6's live end-to-end benchmark: program-unaware versus program-aware serving, real processes.

For each seed, the same seeded mixed workload (the paper's Mixed: ShareGPT chat chains, BFCL tool-use
chains, LATS tree searches; the demo's scaled-down version, docs/demo.md) runs twice through a live
stack on loopback -- a proxy, one sidecar per engine and two simulated ``a100-llama3-8b`` engines at
``--time-scale 0.2`` (five simulated seconds per wall second) -- once as today's serving and once
program-aware:

- ``fcfs``: FCFS sidecars, FCFS engines, round-robin router;
- ``autellix``: ATLAS sidecars (``--scheduler plas`` for PLAS), priority engines, locality router.

It prints, per seed and pooled over every program of every seed, the mean and P95 program token
latency (the paper's metric: a program's response time over the tokens it generated, in simulated
seconds) of both setups and their ratio, the discrete-event simulation's prediction of the same ratio,
whether the ``fcfs`` setup was saturated (its last program finished long after the last arrival: calls
queued), and whether the machine kept up (pacing, arrival lag). Target (issue 6): the pooled mean
latency >= 2x lower for ``autellix``.

Why two workload lengths (``--programs 120 240``, both at 2 programs/s, past the ``fcfs`` setup's
capacity of about 1.2 programs/s): past saturation the ratio is not one number. FCFS's backlog grows for
as long as the overload lasts, while ATLAS keeps new and short programs ahead of it, so the ratio grows
with the overload's length (simulated, 3 seeds: 1.99x at 60 s of arrivals, 2.44x at 120 s). 120 programs
is the demo's workload, chosen before this benchmark existed; 240 is the same overload twice as long.
Both are printed; neither was tuned.

Why several seeds and pooled figures: past saturation a few chat programs whose answer is one or two
tokens weigh most in the mean (response time / 1 token), so one seed's ratio moves by +-20% with the
luck of where those programs land; the pooled figure over all seeds is the one to quote.

Run: ``.venv/bin/python benchmarks/bench_live_e2e.py [--seeds 0 1 2] [--rate 2.0] [--programs 120]``
(25-45 wall seconds per setup, seed and length; about 6.5 minutes in all).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autellix.demo import StackRun, demo_programs, run_setup, setups
from autellix.demo_config import DemoSettings
from autellix.records import ProgramRecord, percentile
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import TokenCache

TARGET = 2.0
# a machine that kept up: programs started at most this late (p95, wall s), token gaps within 5%
BUSY_LAG = 0.05
BUSY_PACING = 1.05
NOISY = "\n  WARNING: the machine was busy during a run (pacing or arrival lag): figures are noisy"


def latencies(programs: tuple[ProgramRecord, ...] | list[ProgramRecord]) -> list[float]:
    return [lat for p in programs if (lat := p.token_latency) is not None]


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p95": percentile(values, 95.0)} if values else {}


def describe(run: StackRun) -> dict[str, object]:
    result = run.result
    last_arrival = max((p.arrival for p in result.programs), default=0.0)
    return {
        **stats(latencies(result.programs)),
        "done": f"{result.summary.programs_completed}/{result.summary.programs}",
        "makespan": result.summary.makespan,
        "last_arrival": last_arrival,
        "pacing": run.pacing,
        "arrival_lag_p95": result.arrival_lag.p95,
        "errors": result.errors_by_kind,
        "cpu_share": run.cpu_share,
    }


def run_length(
    args: argparse.Namespace, programs_count: int, log_dir: Path, tokens: TokenCache
) -> dict[str, object]:
    """Every seed at one overload length; per-seed rows and the pooled figures."""
    pooled: dict[str, list[float]] = {"fcfs": [], "autellix": []}
    sim_pooled: dict[str, list[float]] = {"fcfs": [], "autellix": []}
    busy = False
    seeds: list[dict[str, object]] = []
    print(
        f"\n{programs_count} programs per seed ({programs_count / args.rate:.0f} s of arrivals):", flush=True
    )
    for seed in args.seeds:
        settings = DemoSettings.model_validate(
            {
                "engines": args.engines,
                "max_num_seqs": args.max_num_seqs,
                "time_scale": args.time_scale,
                "programs": programs_count,
                "rate": args.rate,
                "scheduler": args.scheduler,
                "seed": seed,
                "progress": False,
                "duration": 4 * programs_count / args.rate * args.time_scale + 60,  # 4x the arrival span
            }
        )
        programs = demo_programs(settings)
        config = ClusterConfig(
            num_engines=args.engines, profile=settings.profile, max_num_seqs=args.max_num_seqs, seed=seed
        )
        row: dict[str, object] = {"seed": seed}
        for setup, name in zip(setups(settings), ("fcfs", "autellix"), strict=True):
            run = run_setup(settings, setup, programs, log_dir)
            sim = latencies(list(simulate(programs, setup.preset, config, tokens=tokens).programs))
            pooled[name] += latencies(run.result.programs)
            sim_pooled[name] += sim
            busy = busy or run.pacing > BUSY_PACING or run.result.arrival_lag.p95 > BUSY_LAG
            row[name] = {**describe(run), "sim": stats(sim)}
        fcfs, aware = row["fcfs"], row["autellix"]
        assert isinstance(fcfs, dict) and isinstance(aware, dict)
        row["ratio_mean"] = fcfs["mean"] / aware["mean"]
        row["ratio_p95"] = fcfs["p95"] / aware["p95"]
        row["sim_ratio_mean"] = fcfs["sim"]["mean"] / aware["sim"]["mean"]
        seeds.append(row)
        print(
            f"  seed {seed}: mean s/token fcfs {fcfs['mean']:.4f} autellix {aware['mean']:.4f} -> "
            f"{row['ratio_mean']:.2f}x (simulated {row['sim_ratio_mean']:.2f}x) | P95 {fcfs['p95']:.4f} vs "
            f"{aware['p95']:.4f} -> {row['ratio_p95']:.2f}x | done {fcfs['done']} / {aware['done']} | fcfs "
            f"last arrival {fcfs['last_arrival']:.0f} s, last completion {fcfs['makespan']:.0f} s | pacing "
            f"{fcfs['pacing']:.2f} / {aware['pacing']:.2f}, lag p95 {fcfs['arrival_lag_p95'] * 1000:.0f} / "
            f"{aware['arrival_lag_p95'] * 1000:.0f} ms",
            flush=True,
        )
    live_f, live_a = stats(pooled["fcfs"]), stats(pooled["autellix"])
    sim_f, sim_a = stats(sim_pooled["fcfs"]), stats(sim_pooled["autellix"])
    ratio = live_f["mean"] / live_a["mean"]
    summary: dict[str, object] = {
        "programs": programs_count,
        "fcfs": live_f,
        "autellix": live_a,
        "ratio_mean": ratio,
        "ratio_p95": live_f["p95"] / live_a["p95"],
        "sim_ratio_mean": sim_f["mean"] / sim_a["mean"],
        "sim_ratio_p95": sim_f["p95"] / sim_a["p95"],
        "per_seed_ratio_min": min(float(r["ratio_mean"]) for r in seeds),  # type: ignore[arg-type]
        "per_seed_ratio_max": max(float(r["ratio_mean"]) for r in seeds),  # type: ignore[arg-type]
        "met": ratio >= TARGET,
        "machine_busy": busy,
        "seeds": seeds,
    }
    print(
        f"  pooled ({len(pooled['fcfs'])} + {len(pooled['autellix'])} programs): mean fcfs "
        f"{live_f['mean']:.4f} autellix {live_a['mean']:.4f} s/token -> {ratio:.2f}x lower (per seed "
        f"{summary['per_seed_ratio_min']:.2f}-{summary['per_seed_ratio_max']:.2f}x; simulated "
        f"{summary['sim_ratio_mean']:.2f}x); P95 {live_f['p95']:.4f} vs {live_a['p95']:.4f} -> "
        f"{summary['ratio_p95']:.2f}x (simulated {summary['sim_ratio_p95']:.2f}x)" + (NOISY if busy else ""),
        flush=True,
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--programs", type=int, nargs="+", default=[120, 240], help="programs per seed: the overload's length"
    )
    parser.add_argument("--rate", type=float, default=2.0, help="program arrivals per simulated second")
    parser.add_argument("--time-scale", type=float, default=0.2, help="wall seconds per simulated second")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--scheduler", choices=["atlas", "plas"], default="atlas")
    parser.add_argument("--out", default="results/bench_live_e2e.json")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-e2e-"))
    tokens = TokenCache()
    began = time.monotonic()
    print(
        f"{args.engines} simulated a100-llama3-8b engines (max_num_seqs {args.max_num_seqs}) behind sidecars "
        f"and a proxy, time scale {args.time_scale:g}; mixed programs at {args.rate:g} programs/s, seeds "
        f"{' '.join(map(str, args.seeds))}; fcfs+round_robin vs {args.scheduler}+autellix",
        flush=True,
    )
    lengths = [run_length(args, count, log_dir, tokens) for count in args.programs]
    print(f"\nmean program token latency, autellix lower by (target >= {TARGET:g}x):")
    for summary in lengths:
        print(
            f"  {summary['programs']} programs: live {summary['ratio_mean']:.2f}x "
            f"({'met' if summary['met'] else 'MISSED'}), simulated {summary['sim_ratio_mean']:.2f}x; "
            f"P95 live {summary['ratio_p95']:.2f}x"
        )
    print(f"wall {time.monotonic() - began:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "target": TARGET, "lengths": lengths}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
