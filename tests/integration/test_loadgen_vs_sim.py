"""The live stack and the discrete-event simulation agree on the same seeded workload and system.

A small mixed workload at a moderate load runs through real processes (simulated engines, ATLAS
sidecars, the proxy with the locality router, the live load generator) and through
``simulator.cluster.simulate`` with the same engine settings. Their mean program token latencies must
agree within a generous bound: the live stack adds ~10 ms of simulated time per call (HTTP hops,
a step boundary missed by a few ms; see docs/demo.md), and a shared 2-core machine adds noise.
benchmarks/bench_live_vs_sim.py prints the figures at full size (within 5% at moderate load there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autellix.demo import demo_programs, run_setup, setups
from autellix.demo_config import DemoSettings
from autellix.simulator.cluster import ClusterConfig, simulate

pytestmark = pytest.mark.integration


def test_live_and_simulated_mean_token_latency_agree(tmp_path: Path):
    settings = DemoSettings.model_validate(
        {"programs": 18, "rate": 1.0, "time_scale": 0.5, "progress": False, "duration": 120}
    )
    programs = demo_programs(settings)
    aware = setups(settings)[1]
    config = ClusterConfig(
        num_engines=settings.engines, profile=settings.profile, max_num_seqs=settings.max_num_seqs, seed=0
    )
    simulated = simulate(programs, aware.preset, config).summary
    live = run_setup(settings, aware, programs, tmp_path)
    summary = live.result.summary
    assert live.result.errors == () and summary.programs_completed == simulated.programs_completed == 18
    ratio = summary.token_latency.mean / simulated.token_latency.mean
    detail = f"live {summary.token_latency.mean:.4f}, simulated {simulated.token_latency.mean:.4f}, pacing"
    assert 0.85 <= ratio <= 1.35, f"{detail} {live.pacing:.2f}, cpu {live.cpu_share}"
