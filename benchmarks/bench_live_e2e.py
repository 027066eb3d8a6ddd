"""Issues 6 and 14's live end-to-end benchmark: unaware, program-aware and the closest peer, real processes.

For each seed, the same seeded mixed workload (the paper's Mixed: ShareGPT chat chains, BFCL tool-use
chains, LATS tree searches; the demo's scaled-down version, docs/demo.md) runs through live stacks on
loopback in front of two simulated ``a100-llama3-8b`` engines at ``--time-scale 0.2`` (five simulated
seconds per wall second), one setup after the other (``--setups``, default the first five):

- ``fcfs``: a proxy, FCFS sidecars, FCFS engines, round-robin router (today's serving);
- ``autellix``: ATLAS sidecars (``--scheduler plas`` for PLAS) behind the KV working-set gate and the
  KV budget (the sidecar's defaults), priority engines, locality router;
- ``atlas``: the same without gate and budget (``--working-set off --no-kv-budget``: the ATLAS sidecar
  as it was before issue 14), what the gate is measured against;
- ``autellix-resume`` (only when named in ``--setups``): ``autellix`` with abort-and-resume preemption
  in its sidecars (``--preempt``, issue 14 item 3; the ``autellix-resume`` preset's parameters, the
  minimum quantum scaled to wall time); the sidecars' preemption count is printed;
- ``autellix-residency`` (only when named in ``--setups``): ``autellix`` with the proxy's ``residency``
  router (issue 14 item 2; a program's calls all go to its home, new programs to the engine whose
  working set has the most room), simulated as the ``autellix`` preset with ``--router residency``;
- ``vllm-router-rr`` and ``vllm-router-ps``: vllm-router 0.1.17 (PyPI, Rust; its own environment, as
  ``bench_proxy_overhead.py`` makes it) directly in front of FCFS engines, no sidecar, with
  ``round_robin`` and with ``--enable-program-scheduling`` (how it is set up and fed program identity:
  ``peer_router.py``). If it cannot be installed or started, the error is printed and it is left out.

It prints, per seed and pooled over every program of every seed, the mean and P95 program token
latency (the paper's metric: a program's response time over the tokens it generated, in simulated
seconds) of every setup and the ratios of ``autellix`` to each other one, with the discrete-event
simulation's prediction beside them where a preset models the setup (``fcfs``, ``autellix``,
``atlas``: ``autellix-las``, ``vllm-router-rr``: ``vllm-opt``; none models vllm-router's program
scheduling), whether the ``fcfs`` setup was saturated (its last program finished long after the last
arrival: calls queued), whether the working-set gate held any program back (the sidecars' /metrics,
sampled), and whether the machine kept up (pacing, arrival lag). Targets: the pooled mean latency >=
2x lower for ``autellix`` than ``fcfs`` (issue 6); ``autellix``'s mean and P95 lower than
``vllm-router-ps``'s at both lengths (issue 14).

Why two workload lengths (``--programs 120 240``, both at 2 programs/s, past the ``fcfs`` setup's
capacity of about 1.2 programs/s): past saturation the ratio is not one number. FCFS's backlog grows for
as long as the overload lasts, while ATLAS keeps new and short programs ahead of it, so the ratio grows
with the overload's length (simulated, 3 seeds: 1.99x at 60 s of arrivals, 2.44x at 120 s). 120 programs
is the demo's workload, chosen before this benchmark existed; 240 is the same overload twice as long.
Both are printed; neither was tuned.

Why several seeds and pooled figures: past saturation a few chat programs whose answer is one or two
tokens weigh most in the mean (response time / 1 token), so one seed's ratio moves by +-20% with the
luck of where those programs land; the pooled figure over all seeds is the one to quote.

The KV cache, and why a second configuration (``--num-gpu-blocks``). The demo's engines keep the
profile's cache, 27,000 blocks of 16 = 432,000 tokens each, sized for vLLM's 256 sequences, while
the demo runs 16. The largest context (prompt + output of its largest call) of every program of a
120-program seed sums to ~410,000 tokens (seeds 0-2, computed from the workload before any run), i.e.
~205,000 per engine: even if every program of the run were resident at once, the working set would
fill half the cache, so the gate cannot hold anyone back at 120 programs and hardly at 240; the
benchmark reports what the sampled gate gauges show. The configuration where keeping histories
resident is the question is ``--num-gpu-blocks 1688``: the profile's KV per batch slot
(27,000 / 256 blocks) times the demo's 16 slots, i.e. the demo shrunk the batch 16x and this shrinks
the cache with it, back to the real A100's ratio of memory to batch (27,008 tokens per engine; the
largest call of the workload, ~13,600 tokens, still fits). It was chosen by that rule before any run
of this benchmark with a small cache; the simulation gets the same size (``ClusterConfig``).

Run: ``.venv/bin/python benchmarks/bench_live_e2e.py [--setups fcfs autellix ...] [--seeds 0 1 2]
[--rate 2.0] [--programs 120 240] [--num-gpu-blocks N]`` (25-45 wall seconds per setup, seed and
length: about 16 minutes for the five setups by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autellix.demo import (
    Setup,
    StackRun,
    atlas_setup,
    demo_programs,
    residency_setup,
    resume_setup,
    run_setup,
    setups,
)
from autellix.demo_config import DemoSettings
from autellix.launch import ServiceStartError
from autellix.records import ProgramRecord, percentile
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import TokenCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_router import MODES, router_setup, run_router
from rust_routers import DEFAULT_VENV, RouterEnv, ensure_router_env

TARGET = 2.0
SETUPS = ("fcfs", "autellix", "atlas", *MODES, "autellix-resume", "autellix-residency")
DEFAULT_SETUPS = ("fcfs", "autellix", "atlas", *MODES)
# a preset models these
SIMULATED = ("fcfs", "autellix", "atlas", "vllm-router-rr", "autellix-resume", "autellix-residency")
PEER = "vllm-router-ps"
# a machine that kept up: programs started at most this late (p95, wall s), token gaps within 5%
BUSY_LAG = 0.05
BUSY_PACING = 1.05
NOISY = "\n  WARNING: the machine was busy during a run (pacing or arrival lag): figures are noisy"


def latencies(programs: tuple[ProgramRecord, ...] | list[ProgramRecord]) -> list[float]:
    return [lat for p in programs if (lat := p.token_latency) is not None]


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p95": percentile(values, 95.0)} if values else {}


def ratio(a: dict[str, float], b: dict[str, float], key: str) -> float | None:
    """How many times lower ``b`` is than ``a`` (None without figures)."""
    return a[key] / b[key] if key in a and key in b and b[key] > 0 else None


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


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
        "engine_hit_rate": run.engine_hit_rate,
        "engine_preemptions": run.engine_preemptions,
        "gate": None if run.gate is None else {**vars_of(run.gate), "engaged": run.gate.engaged},
    }


def vars_of(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in getattr(obj, "__slots__", ())}


def contenders(settings: DemoSettings) -> dict[str, Setup]:
    baseline, aware = setups(settings)
    return {"fcfs": baseline, "autellix": aware, "atlas": atlas_setup(settings),
            **{name: router_setup(name) for name in MODES},
            "autellix-resume": resume_setup(settings),
            "autellix-residency": residency_setup(settings)}  # fmt: skip


def ratios(
    live: dict[str, dict[str, float]], sim: dict[str, dict[str, float]]
) -> dict[str, dict[str, object]]:
    """Per other setup: how many times lower autellix's mean and P95 are, live and simulated."""
    aware, sim_aware = live.get("autellix", {}), sim.get("autellix", {})
    return {
        name: {
            "mean": ratio(figures, aware, "mean"),
            "p95": ratio(figures, aware, "p95"),
            "sim_mean": ratio(sim.get(name, {}), sim_aware, "mean"),
            "sim_p95": ratio(sim.get(name, {}), sim_aware, "p95"),
        }
        for name, figures in live.items()
        if name != "autellix"
    }


def ratio_line(table: dict[str, dict[str, object]], key: str) -> str:
    parts = []
    for name, row in table.items():
        live, sim = row[key], row[f"sim_{key}"]
        assert live is None or isinstance(live, float)
        assert sim is None or isinstance(sim, float)
        parts.append(f"{name} {fmt(live)}" + (f" (sim {fmt(sim)})" if sim is not None else ""))
    return ", ".join(parts)


def run_length(
    args: argparse.Namespace,
    programs_count: int,
    log_dir: Path,
    tokens: TokenCache,
    router_env: RouterEnv | None,
    left_out: dict[str, str],
) -> dict[str, object]:
    """Every seed at one overload length; per-seed rows and the pooled figures."""
    pooled: dict[str, list[float]] = {}
    sim_pooled: dict[str, list[float]] = {}
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
                "num_gpu_blocks": args.num_gpu_blocks,
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
            num_engines=args.engines,
            profile=settings.profile,
            max_num_seqs=args.max_num_seqs,
            num_gpu_blocks=args.num_gpu_blocks,
            seed=seed,
        )
        row: dict[str, object] = {"seed": seed}
        live: dict[str, dict[str, float]] = {}
        sim: dict[str, dict[str, float]] = {}
        for name, setup in contenders(settings).items():
            if name not in args.setups or name in left_out:
                continue
            if name in MODES:
                assert router_env is not None
                try:
                    run = run_router(settings, setup, programs, log_dir, router_env)
                except (ServiceStartError, OSError, RuntimeError) as exc:
                    left_out[name] = f"did not start or answer: {exc}"
                    print(f"  {name}: left out ({left_out[name]})", flush=True)
                    continue
            else:
                run = run_setup(settings, setup, programs, log_dir)
            pooled.setdefault(name, []).extend(latencies(run.result.programs))
            busy = busy or run.pacing > BUSY_PACING or run.result.arrival_lag.p95 > BUSY_LAG
            described = describe(run)
            if name in SIMULATED:
                sim_lat = latencies(list(simulate(programs, setup.preset, config, tokens=tokens).programs))
                sim_pooled.setdefault(name, []).extend(sim_lat)
                sim[name] = stats(sim_lat)
                described["sim"] = sim[name]
            live[name] = stats(latencies(run.result.programs))
            row[name] = described
        row["ratios"] = table = ratios(live, sim)
        if "fcfs" in table:  # the names issue 6's output had
            row["ratio_mean"], row["ratio_p95"] = table["fcfs"]["mean"], table["fcfs"]["p95"]
            row["sim_ratio_mean"] = table["fcfs"]["sim_mean"]
        seeds.append(row)
        print_seed(seed, row, live)
    live_pooled = {name: stats(values) for name, values in pooled.items()}
    sim_stats = {name: stats(values) for name, values in sim_pooled.items()}
    table = ratios(live_pooled, sim_stats)
    summary: dict[str, object] = {
        "programs": programs_count,
        "setups": {name: {"live": live_pooled[name], "sim": sim_stats.get(name)} for name in live_pooled},
        "ratios": table,
        "machine_busy": busy,
        "seeds": seeds,
    }
    if "fcfs" in table and table["fcfs"]["mean"] is not None:
        per_seed = [float(r["ratio_mean"]) for r in seeds if r.get("ratio_mean") is not None]  # type: ignore[arg-type]
        summary.update(
            ratio_mean=table["fcfs"]["mean"],
            ratio_p95=table["fcfs"]["p95"],
            sim_ratio_mean=table["fcfs"]["sim_mean"],
            sim_ratio_p95=table["fcfs"]["sim_p95"],
            per_seed_ratio_min=min(per_seed),
            per_seed_ratio_max=max(per_seed),
            met=float(table["fcfs"]["mean"]) >= TARGET,  # type: ignore[arg-type]
        )
    if PEER in table:
        mean, p95 = table[PEER]["mean"], table[PEER]["p95"]
        summary["peer_met"] = isinstance(mean, float) and isinstance(p95, float) and mean > 1 and p95 > 1
    count = " + ".join(str(len(values)) for values in pooled.values())
    print(f"  pooled ({count} programs):")
    for name, figures in live_pooled.items():
        simulated = sim_stats.get(name)
        sim_text = f" (simulated {simulated['mean']:.4f} / {simulated['p95']:.4f})" if simulated else ""
        print(f"    {name:<15} mean {figures['mean']:.4f}  P95 {figures['p95']:.4f} s/token{sim_text}")
    print(f"    autellix lower, mean: {ratio_line(table, 'mean')}")
    print(f"    autellix lower, P95:  {ratio_line(table, 'p95')}" + (NOISY if busy else ""), flush=True)
    return summary


def print_seed(seed: int, row: dict[str, object], live: dict[str, dict[str, float]]) -> None:
    means = " ".join(f"{name} {figures['mean']:.4f}" for name, figures in live.items())
    p95s = " ".join(f"{name} {figures['p95']:.4f}" for name, figures in live.items())
    runs = {name: row[name] for name in live}
    done = " / ".join(str(r["done"]) for r in runs.values() if isinstance(r, dict))
    pacing = " / ".join(f"{r['pacing']:.2f}" for r in runs.values() if isinstance(r, dict))
    lag = " / ".join(
        f"{float(r['arrival_lag_p95']) * 1000:.0f}" for r in runs.values() if isinstance(r, dict)
    )
    print(f"  seed {seed}: mean s/token {means} | P95 {p95s} | done {done}", flush=True)
    table = row["ratios"]
    assert isinstance(table, dict)
    print(f"    autellix lower, mean: {ratio_line(table, 'mean')}; P95: {ratio_line(table, 'p95')}")
    fcfs = runs.get("fcfs")
    saturated = ""
    if isinstance(fcfs, dict):
        saturated = (
            f"fcfs last arrival {fcfs['last_arrival']:.0f} s, last completion {fcfs['makespan']:.0f} s | "
        )
    print(f"    {saturated}pacing {pacing}, lag p95 {lag} ms", flush=True)
    for name, run in runs.items():
        if isinstance(run, dict) and isinstance(run.get("gate"), dict):
            gate = run["gate"]
            held = "held programs back" if gate["engaged"] else "never held a program back"
            print(f"    {name} gate: {held} (at most {gate['max_waiting_programs']} waiting, residents "
                  f"at most "
                  f"{gate['max_resident_share']:.0%} of {gate['kv_capacity_tokens']:,} tokens, displaced "
                  f"{gate['displaced']}; calls stopped and resumed {gate['preemptions']})",
                  flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(DEFAULT_SETUPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--programs", type=int, nargs="+", default=[120, 240], help="programs per seed: the overload's length"
    )
    parser.add_argument("--rate", type=float, default=2.0, help="program arrivals per simulated second")
    parser.add_argument("--time-scale", type=float, default=0.2, help="wall seconds per simulated second")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument(
        "--num-gpu-blocks", type=int, default=None, help="KV blocks per engine (default: the profile's)"
    )
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--scheduler", choices=["atlas", "plas"], default="atlas")
    parser.add_argument("--routers-venv", type=Path, default=DEFAULT_VENV, help="vllm-router's environment")
    parser.add_argument(
        "--out", default=None, help="JSON results (default: results/bench_live_e2e[_kvN].json)"
    )
    args = parser.parse_args()
    out = Path(
        args.out or f"results/bench_live_e2e{f'_kv{args.num_gpu_blocks}' if args.num_gpu_blocks else ''}.json"
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-e2e-"))
    tokens = TokenCache()
    began = time.monotonic()
    left_out: dict[str, str] = {}
    router_env = None
    if any(name in MODES for name in args.setups):
        router_env, why = ensure_router_env(args.routers_venv, sys.executable, log_dir / "install.log")
        if router_env is None:
            left_out.update({name: why for name in MODES})
            print(f"vllm-router left out: {why}", flush=True)
        else:
            print(
                f"vllm-router {router_env.versions.get('vllm-router', '?')} from {router_env.venv}",
                flush=True,
            )
    blocks = f"{args.num_gpu_blocks} KV blocks" if args.num_gpu_blocks else "the profile's KV cache"
    print(
        f"{args.engines} simulated a100-llama3-8b engines (max_num_seqs {args.max_num_seqs}, {blocks}), "
        f"time scale {args.time_scale:g}; mixed programs at {args.rate:g} programs/s, seeds "
        f"{' '.join(map(str, args.seeds))}; setups {' '.join(args.setups)} ({args.scheduler} sidecars)",
        flush=True,
    )
    lengths = [run_length(args, count, log_dir, tokens, router_env, left_out) for count in args.programs]
    print(
        f"\nautellix's program token latency, lower by (targets: >= {TARGET:g}x fcfs; "
        f"> 1x {PEER}, mean and P95):"
    )
    for summary in lengths:
        table = summary["ratios"]
        assert isinstance(table, dict)
        verdicts = []
        if "met" in summary:
            verdicts.append(f"fcfs target {'met' if summary['met'] else 'MISSED'}")
        if "peer_met" in summary:
            verdicts.append(f"{PEER} target {'met' if summary['peer_met'] else 'MISSED'}")
        print(f"  {summary['programs']} programs: mean {ratio_line(table, 'mean')}")
        print(f"  {' ' * len(str(summary['programs']))}           P95  {ratio_line(table, 'p95')}"
              + (f"; {', '.join(verdicts)}" if verdicts else ""))  # fmt: skip
    for name, why in left_out.items():
        print(f"left out {name}: {why}")
    print(f"wall {time.monotonic() - began:.0f} s (service logs in {log_dir})")
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "config": {**vars(args), "routers_venv": str(args.routers_venv)},
        "router_versions": router_env.versions if router_env else None,
        "target": TARGET,
        "left_out": left_out,
        "lengths": lengths,
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
