"""How much a sidecar can gain on issue 6's workload, and what the queue's knobs change (simulation).

Issue 6 asks for >= 2x lower mean program token latency than FCFS + round robin, live, on the demo's
mixed workload past the FCFS setup's capacity. This script asks the discrete-event simulation (the same
core code as the live services, in virtual time; ``autellix/simulator/cluster.py``) what is reachable on
that workload, seed by seed, as the ratio ``fcfs mean / system mean``:

- ``atlas``: what the live stack runs (ATLAS sidecars, priority engines, locality router);
- ``srpt``: the same sidecars ordered by clairvoyant shortest remaining program work (the optimum of a
  sidecar that cannot preempt: it knows every program's future);
- ``atlas-engine`` / ``srpt-engine``: the same orders inside the engine, preempting running calls every
  scheduling round (what a patched engine could do; ``mode="engine"``);
- knob variants of ``atlas``: a finer level ladder (ratio sqrt 2 and 1.2 instead of 2), beta 3, 5, 30 and
  off, an admission window without slack (``overprovision 0``), and the least-used router.

Reading: if ``srpt`` (clairvoyant, non-preemptive) sits near 2x, no non-clairvoyant order of a sidecar
gets far past it, and the knobs move ``atlas`` by a few percent at most.

Run: ``.venv/bin/python benchmarks/bench_sidecar_bounds.py [--seeds 0 1 2 3] [--rate 2.0]
[--programs 120]`` (~2 s per system and seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autellix.demo import demo_programs, setups
from autellix.demo_config import DemoSettings
from autellix.engine_adapters.scheduling import DEFAULT_BOUNDARIES
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import TokenCache
from autellix.simulator.cluster_systems import SystemPreset


def ladder(ratio: float, first: float = 0.5, top: float = 64.0) -> list[float]:
    """Level lower bounds 0, first, first*ratio, ... below ``top`` (the default is ratio 2 up to 32)."""
    bounds, bound = [0.0], first
    while bound < top:
        bounds.append(round(bound, 4))
        bound *= ratio
    return bounds


def variants(aware: SystemPreset) -> dict[str, tuple[SystemPreset, dict[str, Any]]]:
    """name -> (preset, ClusterConfig overrides)."""

    def queue(**params: object) -> SystemPreset:
        return dataclasses.replace(aware, queue_params=params)

    return {
        "atlas": (aware, {}),
        "srpt": (dataclasses.replace(aware, queue="srpt"), {}),
        "atlas-engine": (dataclasses.replace(aware, mode="engine"), {}),
        "srpt-engine": (dataclasses.replace(aware, queue="srpt", mode="engine"), {}),
        "atlas ladder x1.41": (queue(boundaries=ladder(2**0.5)), {}),
        "atlas ladder x1.2": (queue(boundaries=ladder(1.2)), {}),
        "atlas beta 3": (queue(beta=3.0), {}),
        "atlas beta 5": (queue(beta=5.0), {}),
        "atlas beta 30": (queue(beta=30.0), {}),
        "atlas beta off": (queue(beta=None), {}),
        "atlas overprovision 0": (aware, {"overprovision": 0}),
        "atlas least_used": (aware.with_router("least_used"), {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--programs", type=int, default=120)
    parser.add_argument("--out", default="results/bench_sidecar_bounds.json")
    args = parser.parse_args()
    began = time.monotonic()
    tokens = TokenCache()
    ratios: dict[str, list[float]] = {}
    for seed in args.seeds:
        settings = DemoSettings.model_validate(
            {"seed": seed, "rate": args.rate, "programs": args.programs, "progress": False}
        )
        programs = demo_programs(settings)
        fcfs, aware = setups(settings)
        base = ClusterConfig(num_engines=settings.engines, profile=settings.profile,
                             max_num_seqs=settings.max_num_seqs, seed=seed)  # fmt: skip
        reference = simulate(programs, fcfs.preset, base, tokens=tokens).summary.token_latency.mean
        for name, (preset, overrides) in variants(aware.preset).items():
            config = dataclasses.replace(base, **overrides)
            mean = simulate(programs, preset, config, tokens=tokens).summary.token_latency.mean
            ratios.setdefault(name, []).append(reference / mean)
        print(f"seed {seed} done ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
    print(f"fcfs mean program token latency / system's ({args.programs} programs at {args.rate:g}/s, "
          f"default ladder {list(DEFAULT_BOUNDARIES)}):")  # fmt: skip
    print(f"{'system':<24}" + "".join(f"{'seed ' + str(s):>9}" for s in args.seeds) + f"{'mean':>9}")
    summary = {}
    for name, values in ratios.items():
        summary[name] = {"per_seed": values, "mean": statistics.fmean(values)}
        print(f"{name:<24}" + "".join(f"{v:>8.2f}x" for v in values) + f"{statistics.fmean(values):>8.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "ratios": summary}, indent=2))
    print(f"wrote {out} ({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
