"""cluster.py rule 5: an abort-and-resume stop that falls inside an engine step.

A found case (sweep of issue 14): a stop chosen while the engine ran the step that finished the call,
or gave it its first token, left that step's output naming a request the cluster had dropped, and the
run died with a KeyError. Every call must still complete exactly once with all its tokens.
"""

from __future__ import annotations

from autellix.loadgen.arrivals import make_workload
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_systems import get_system


def test_a_stop_inside_a_step_loses_no_call() -> None:
    programs = make_workload("sharegpt", 120, 6.0, 7)
    result = simulate(programs, get_system("autellix-resume"), ClusterConfig(max_num_seqs=4))
    assert result.policy_preemptions > 0  # the case needs stops, many of them
    calls = sum(len(p.calls) for p in programs)
    assert result.summary.calls_completed == calls
    assert result.summary.output_tokens >= sum(c.output_tokens for p in programs for c in p.calls)
