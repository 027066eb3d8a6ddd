"""Statistics and generation cost of the four workloads, against the paper's figures (reference.md §2).

For each workload: ``--programs`` programs are generated twice (``cold`` includes reading the
installed data and solving the calibration, ``warm`` is a second batch in the same process), then
measured with the project's tokenizer:

- calls per program (mean, max), decode tokens per call, new input tokens per call (all programs),
  whole prompt tokens per call (first ``--prompt-sample`` programs: encoding whole prompts of long
  chains is slow), critical path and fan-out per program;
- the paper's figure for each, and which metric its "prefill tokens per call" maps to;
- the size and write/read time of a JSONL trace of the mixed batch.

Run: ``.venv/bin/python benchmarks/bench_workload_stats.py [--programs 1000] [--seed 1] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from autellix.loadgen.arrivals import make_workload
from autellix.loadgen.trace import read_trace, write_trace
from autellix.loadgen.workloads.stats import PAPER_TARGETS, measure

WORKLOADS = ("sharegpt", "bfcl", "lats", "mixed")


def deviation(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return ""
    return f"{100.0 * (value / target - 1.0):+.1f}%"


def run(programs: int, seed: int, prompt_sample: int) -> dict[str, object]:
    results: dict[str, object] = {}
    for name in WORKLOADS:
        started = time.perf_counter()
        batch = make_workload(name, programs, 1.0, seed)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        make_workload(name, programs, 1.0, seed + 1)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        figures = measure(batch, prompt_tokens=False)
        prompts = measure(batch[:prompt_sample], new_tokens=False).prompt_tokens_mean
        measured_in = time.perf_counter() - started
        target = PAPER_TARGETS.get(name)
        prefill = None
        if target is not None:
            prefill = prompts if target.prefill_metric == "prompt_tokens" else figures.new_tokens_mean
        results[name] = {
            "programs": programs,
            "generate_cold_s": round(cold, 3),
            "generate_warm_s": round(warm, 3),
            "measure_s": round(measured_in, 3),
            "calls_mean": figures.calls_mean,
            "calls_max": figures.calls_max,
            "new_tokens_mean": figures.new_tokens_mean,
            "prompt_tokens_mean_sample": prompts,
            "output_tokens_mean": figures.output_tokens_mean,
            "critical_path_mean": figures.critical_path_mean,
            "max_parallelism_mean": figures.max_parallelism_mean,
            "chain_fraction": figures.chain_fraction,
            "paper": None
            if target is None
            else {
                "calls_mean": target.calls_mean,
                "prefill_tokens_mean": target.prefill_tokens_mean,
                "prefill_metric": target.prefill_metric,
                "output_tokens_mean": target.output_tokens_mean,
                "calls_deviation": deviation(figures.calls_mean, target.calls_mean),
                "prefill_deviation": deviation(prefill, target.prefill_tokens_mean),
                "output_deviation": deviation(figures.output_tokens_mean, target.output_tokens_mean),
            },
        }
        if name == "mixed":
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "mixed.jsonl"
                started = time.perf_counter()
                write_trace(path, batch)
                written = time.perf_counter() - started
                started = time.perf_counter()
                exact = read_trace(path) == batch
                read = time.perf_counter() - started
                results["trace_mixed"] = {
                    "bytes": path.stat().st_size,
                    "write_s": round(written, 3),
                    "read_s": round(read, 3),
                    "round_trip_exact": exact,
                }
    return results


def report(results: dict[str, object]) -> None:
    print(
        f"{'workload':9} {'cold s':>7} {'warm s':>7} {'calls':>14} {'max':>4} {'prefill/call':>22} "
        f"{'decode/call':>18} {'prompt/call':>11} {'crit.path':>9} {'width':>5}"
    )
    for name in WORKLOADS:
        row = results[name]
        assert isinstance(row, dict)
        paper = row["paper"] or {}
        metric = paper.get("prefill_metric", "new_tokens")
        prefill = row["prompt_tokens_mean_sample"] if metric == "prompt_tokens" else row["new_tokens_mean"]
        print(
            f"{name:9} {row['generate_cold_s']:7.2f} {row['generate_warm_s']:7.2f} "
            f"{row['calls_mean']:6.2f} {paper.get('calls_deviation', ''):>7} {row['calls_max']:4d} "
            f"{prefill:7.1f} {metric[:6]:>6} {paper.get('prefill_deviation', ''):>7} "
            f"{row['output_tokens_mean']:7.1f} {paper.get('output_deviation', ''):>10} "
            f"{row['prompt_tokens_mean_sample']:11.0f} {row['critical_path_mean']:9.1f} "
            f"{row['max_parallelism_mean']:5.1f}"
        )
    trace = results["trace_mixed"]
    assert isinstance(trace, dict)
    print(
        f"mixed trace: {trace['bytes'] / 1e6:.1f} MB, write {trace['write_s']:.2f} s, "
        f"read {trace['read_s']:.2f} s, exact round trip: {trace['round_trip_exact']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--programs", type=int, default=1000, help="per workload (ShareGPT needs ~1000 to settle)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--prompt-sample", type=int, default=60, help="programs whose whole prompts are encoded"
    )
    parser.add_argument("--out", default="results/workload_stats.json")
    args = parser.parse_args()
    results = run(args.programs, args.seed, args.prompt_sample)
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"python": platform.python_version(), "seed": args.seed, "results": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
