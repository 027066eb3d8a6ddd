"""Mean inter-token latency of a lone streamed request against the profile's expected decode step time.

Starts ``autellix sim-engine`` as a real process in real time (``--time-scale 1``), streams one request
with a forced output length, and compares the measured mean gap between content chunks with the step-time
model's decode time for one sequence at the request's average context (reference.md §3). A ratio near 1.0
means the server paces tokens like the GPU it imitates; above 1.0 is server overhead on this machine.

    .venv/bin/python benchmarks/bench_sim_engine_itl.py [--profile a100-llama3-8b] [--tokens 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from autellix.launch import start_sim_engine
from autellix.simulator import tokenizer
from autellix.simulator.stepmodel import StepShape, get_profile


def measure(profile_name: str, tokens: int, prompt_words: int) -> dict[str, float | int | str]:
    prompt = " ".join(f"word{i % 97}" for i in range(prompt_words))
    prompt_len = len(tokenizer.encode(prompt))
    with tempfile.TemporaryDirectory() as tmp:
        engine = start_sim_engine(Path(tmp), ["--profile", profile_name, "--time-scale", "1"])
        try:
            body = {"prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "stream": True}
            arrivals: list[float] = []
            with (
                httpx.Client(timeout=120) as http,
                http.stream("POST", engine.url + "/v1/completions", json=body) as r,
            ):
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        arrivals.append(time.perf_counter())
        finally:
            engine.stop()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    profile = get_profile(profile_name)
    mean_context = prompt_len + tokens / 2
    expected = profile.step_time_s(
        StepShape(num_tokens=1, num_seqs=1, decode_context_tokens=int(mean_context))
    )
    measured = statistics.fmean(gaps)
    return {
        "profile": profile_name,
        "prompt_tokens": prompt_len,
        "output_tokens": len(arrivals),
        "expected_decode_step_ms": round(expected * 1000, 3),
        "measured_mean_itl_ms": round(measured * 1000, 3),
        "measured_p50_itl_ms": round(statistics.median(gaps) * 1000, 3),
        "ratio_measured_to_expected": round(measured / expected, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--profile", action="append", help="profile(s) to measure (default: both 8B profiles)"
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--prompt-words", type=int, default=400)
    parser.add_argument("--out", default="results/bench_sim_engine_itl.json")
    args = parser.parse_args()
    rows = [
        measure(p, args.tokens, args.prompt_words)
        for p in args.profile or ["a100-llama3-8b", "h100-llama3-8b"]
    ]
    print(f"{'profile':<18} {'expected ms':>12} {'mean ITL ms':>12} {'p50 ITL ms':>11} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['profile']:<18} {row['expected_decode_step_ms']:>12} {row['measured_mean_itl_ms']:>12} "
            f"{row['measured_p50_itl_ms']:>11} {row['ratio_measured_to_expected']:>7}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "sim_engine_itl", "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
