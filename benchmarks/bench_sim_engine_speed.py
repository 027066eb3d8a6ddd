"""How fast the simulated engine runs in virtual time (simulated engine-seconds per wall second).

Cases (a100-llama3-8b unless named):
- decode_256: 256 running sequences in decode, contexts 600 -> 1600 tokens (~1.1k mean), every
  token reported.
- decode_256_quiet: the same with ``step(now, quiet=True)`` (first tokens and finishes only).
- decode_1024_h100: h100-llama3-8b with its 1024-sequence default, contexts 200 -> 380 tokens (the
  KV cache of one 80 GB GPU holds ~430k tokens, so 1024 sequences cannot have 1k contexts); also quiet.
- mixed: Poisson arrivals (shared system prompt + own text ~1k tokens, outputs 50-300) near
  saturation: chunked prefills, prefix hits and decodes in the same steps; submission included.

Usage: .venv/bin/python benchmarks/bench_sim_engine_speed.py [--out results/bench_sim_engine_speed.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from autellix.simulator.engine import EngineConfig, SimEngine, SimRequest
from autellix.simulator.stepmodel import get_profile


def make_engine(profile_name: str) -> SimEngine:
    p = get_profile(profile_name)
    config = EngineConfig(
        num_gpu_blocks=p.num_gpu_blocks,
        max_num_seqs=p.max_num_seqs,
        max_num_batched_tokens=p.max_num_batched_tokens,
    )
    return SimEngine(config, p)


def decode_case(
    profile_name: str, seqs: int, prompt_len: int, steps_per_round: int, wall_budget: float, quiet: bool
) -> dict[str, float]:
    """Rounds of: fresh engine, prefill ``seqs`` prompts (untimed), then ``steps_per_round`` timed
    decode steps (short enough that the KV cache never fills, so no preemption)."""
    rng = random.Random(1)
    steps = 0
    wall = simulated = context = 0.0
    while wall < wall_budget:
        e = make_engine(profile_name)
        for i in range(seqs):
            prompt = [rng.randrange(16, 32000) for _ in range(prompt_len)]
            e.add_request(SimRequest(f"r{i}", prompt, steps_per_round + 200, 0.0))
        now = 0.0
        while e.stats.prompt_tokens < seqs * prompt_len:
            now += e.step(now).duration
        assert e.stats.num_running == seqs
        sim0 = now
        t0 = time.perf_counter()
        for _ in range(steps_per_round):
            now += e.step(now, quiet=quiet).duration
        wall += time.perf_counter() - t0
        assert e.stats.num_preemptions == 0 and e.stats.num_running == seqs
        simulated += now - sim0
        steps += steps_per_round
        context = prompt_len + steps_per_round / 2
    return {
        "profile": profile_name,  # type: ignore[dict-item]
        "running_seqs": seqs,
        "mean_context_tokens": context,
        "steps": steps,
        "wall_s": wall,
        "simulated_s": simulated,
        "sim_per_wall": simulated / wall,
        "steps_per_wall_s": steps / wall,
        "wall_per_step_ms": wall / steps * 1000,
    }


def mixed_case(sim_seconds: float, rate: float) -> dict[str, float]:
    rng = random.Random(2)
    e = make_engine("a100-llama3-8b")
    system = [rng.randrange(16, 32000) for _ in range(400)]
    arrivals: list[SimRequest] = []
    t = 0.0
    i = 0
    while t < sim_seconds:
        t += rng.expovariate(rate)
        own = [rng.randrange(16, 32000) for _ in range(rng.randrange(200, 1200))]
        arrivals.append(SimRequest(f"m{i}", system + own, rng.randrange(50, 300), t))
        i += 1
    now = 0.0
    steps = prefill_steps = 0
    nxt = 0
    t0 = time.perf_counter()
    while now < sim_seconds:
        while nxt < len(arrivals) and arrivals[nxt].arrival_time <= now:
            e.add_request(arrivals[nxt])
            nxt += 1
        r = e.step(now)
        if r.duration == 0.0:
            now = arrivals[nxt].arrival_time if nxt < len(arrivals) else sim_seconds
            continue
        steps += 1
        prefill_steps += r.num_scheduled_tokens > r.num_running
        now += r.duration
    wall = time.perf_counter() - t0
    s = e.stats
    return {
        "profile": "a100-llama3-8b",  # type: ignore[dict-item]
        "arrival_rate_per_s": rate,
        "requests_submitted": nxt,
        "requests_finished": s.num_finished,
        "steps": steps,
        "steps_with_prefill_fraction": prefill_steps / max(steps, 1),
        "busy_fraction": s.busy_time / sim_seconds,
        "mean_running": s.generation_tokens / max(steps, 1),
        "prefix_hit_rate": s.prefix_cache_hits / max(s.prefix_cache_queries, 1),
        "preemptions": s.num_preemptions,
        "wall_s": wall,
        "simulated_s": sim_seconds,
        "sim_per_wall": sim_seconds / wall,
        "steps_per_wall_s": steps / wall,
        "wall_per_step_ms": wall / max(steps, 1) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="results/bench_sim_engine_speed.json", help="JSON output file")
    parser.add_argument("--seconds", type=float, default=2.5, help="timed wall seconds per decode case")
    parser.add_argument(
        "--mixed-sim-seconds", type=float, default=600.0, help="simulated seconds of the mixed run"
    )
    parser.add_argument(
        "--mixed-rate", type=float, default=10.0, help="arrivals per simulated second (mixed run)"
    )
    args = parser.parse_args()

    results = {
        "decode_256": decode_case("a100-llama3-8b", 256, 600, 1000, args.seconds, quiet=False),
        "decode_256_quiet": decode_case("a100-llama3-8b", 256, 600, 1000, args.seconds, quiet=True),
        "decode_1024_h100": decode_case("h100-llama3-8b", 1024, 200, 180, args.seconds, quiet=False),
        "decode_1024_h100_quiet": decode_case("h100-llama3-8b", 1024, 200, 180, args.seconds, quiet=True),
        "mixed": mixed_case(args.mixed_sim_seconds, args.mixed_rate),
    }
    print(
        f"{'case':<22} {'sim s / wall s':>14} {'steps / wall s':>14} {'wall ms/step':>12} {'sim ms/step':>11}"
    )
    for name, r in results.items():
        sim_ms = r["simulated_s"] / r["steps"] * 1000
        print(
            f"{name:<22} {r['sim_per_wall']:>14.0f} {r['steps_per_wall_s']:>14.0f} "
            f"{r['wall_per_step_ms']:>12.3f} {sim_ms:>11.1f}"
        )
    m = results["mixed"]
    print(
        f"mixed: {m['requests_finished']}/{m['requests_submitted']} finished, busy {m['busy_fraction']:.0%}, "
        f"{m['steps_with_prefill_fraction']:.0%} steps with prefill, "
        f"~{m['mean_running']:.0f} tokens out/step, "
        f"prefix hit rate {m['prefix_hit_rate']:.0%}, {m['preemptions']} preemptions"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
