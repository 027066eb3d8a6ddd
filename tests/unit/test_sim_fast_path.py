"""The simulation's fast paths give exactly what the per-step reference gives (issue 14 item 5).

The engine's decode group (``EngineConfig.fast_decode``, engine.py rule 7) is checked step by step
against the per-step walk on random request streams (admissions, chunked prefill, prefix hits,
preemption, aborts, both policies, small caches); the cluster simulation is checked end to end, with
the fast path on and off, on small traces of every workload under several systems; the prompt and
block-hash reuse of ``ProgramPrompts`` against building every prompt from scratch.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

import pytest

from autellix.loadgen.arrivals import make_workload
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_prompts import GENERATION_HEADER, ProgramPrompts, TokenCache
from autellix.simulator.cluster_systems import get_system
from autellix.simulator.engine import EngineConfig, SimEngine, SimRequest
from autellix.simulator.kvcache import hash_token_blocks
from autellix.simulator.stepmodel import get_profile
from autellix.simulator.tokenizer import SPECIAL_TOKENS


def stream_log(
    seed: int,
    fast: bool,
    policy: Literal["fcfs", "priority"],
    blocks: int,
    caching: bool,
    budget: int,
    seqs: int,
    block_size: int,
) -> list[object]:
    """Every StepResult, the stats after it and some request states of one random stream."""
    rng = random.Random(seed)
    config = EngineConfig(
        num_gpu_blocks=blocks,
        block_size=block_size,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        enable_prefix_caching=caching,
        policy=policy,
        fast_decode=fast,
    )
    engine = SimEngine(config, get_profile("a100-llama3-8b"))
    shared = [rng.randrange(100, 30000) for _ in range(200)]
    log: list[object] = []
    now = 0.0
    n = 0
    for _ in range(300):
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            length = rng.randint(1, 120)
            prefix = rng.randint(0, min(length, 100))
            prompt = shared[:prefix] + [rng.randrange(100, 30000) for _ in range(length - prefix)]
            out = rng.randint(1, 60)
            if (length + out - 1) // block_size + 1 > blocks:
                continue
            priority = rng.randint(0, 3) if policy == "priority" else 0
            engine.add_request(SimRequest(f"r{n}", prompt, out, now, priority))
            n += 1
        running = engine.running_ids()
        if running and rng.random() < 0.03:
            engine.abort_request(rng.choice(running))
        if running and rng.random() < 0.05:
            log.append(engine.request_state(rng.choice(running)))
        result = engine.step(now, quiet=True)
        log.append(result)
        log.append(engine.stats)
        now += result.duration
    return log


@pytest.mark.parametrize("seed", range(40))
def test_decode_group_steps_exactly_as_the_per_step_walk(seed: int) -> None:
    rng = random.Random(seed)
    policy: Literal["fcfs", "priority"] = rng.choice(["fcfs", "priority"])
    args = (
        policy,
        rng.choice([20, 40, 80, 400]),  # blocks: small caches preempt
        rng.random() < 0.8,
        rng.choice([16, 64, 300, 2048]),  # token budget: small ones cut the walk
        rng.choice([2, 4, 256]),
        rng.choice([2, 4, 16]),
    )
    assert stream_log(seed, True, *args) == stream_log(seed, False, *args)


def test_decode_group_keeps_the_generated_ids_and_hashes() -> None:
    """A request that is preempted after decoding in the group re-admits with its full cached history:
    its generated ids and block hashes are the per-step path's."""
    states = []
    for fast in (True, False):
        config = EngineConfig(num_gpu_blocks=12, block_size=4, max_num_seqs=8, fast_decode=fast)
        engine = SimEngine(config, get_profile("unit"))
        engine.add_request(SimRequest("a", list(range(100, 110)), 30, 0.0))
        engine.add_request(SimRequest("b", list(range(200, 210)), 30, 0.0))
        now = 0.0
        log = []
        while engine.has_unfinished_requests():
            result = engine.step(now, quiet=True)
            log.append(result)
            now += result.duration
        stats = engine.stats
        assert stats.num_preemptions > 0
        states.append((log, stats))
    assert states[0] == states[1]


@pytest.mark.parametrize(
    ("workload", "system"),
    [
        ("mixed", "vllm-opt"),
        ("mixed", "autellix"),
        ("mixed", "autellix-resume"),
        ("sharegpt", "vllm"),
        ("sharegpt", "srpt"),
        ("bfcl", "autellix"),
        ("lats", "continuum"),
        ("mixed", "autellix-engine"),
    ],
)
def test_cluster_results_are_identical_with_and_without_the_fast_path(workload: str, system: str) -> None:
    programs = make_workload(workload, 12, 2.0, 5)
    # A small cache so that the engines preempt and evict, and a short clock that cuts the run.
    results = [
        simulate(
            programs, get_system(system), ClusterConfig(num_gpu_blocks=900, max_time=40.0, fast_decode=fast)
        )
        for fast in (True, False)
    ]
    fast, slow = results
    assert fast.calls == slow.calls
    assert fast.programs == slow.programs
    assert fast.engines == slow.engines
    assert fast.end_time == slow.end_time and fast.events == slow.events
    assert dataclasses.asdict(fast.summary) == dataclasses.asdict(slow.summary)
    assert fast.calls  # the trace did something


@pytest.mark.parametrize("workload", ["sharegpt", "bfcl", "lats", "mixed"])
def test_program_prompts_reuse_equals_building_from_scratch(workload: str) -> None:
    tokens = TokenCache()
    for program in make_workload(workload, 6, 1.0, 11):
        prompts = ProgramPrompts(program, tokens)
        fresh = ProgramPrompts(program, TokenCache())
        for call in program.calls:
            expected = [SPECIAL_TOKENS["<|begin_of_text|>"]]
            for index in call.prompt:
                expected += TokenCache().message_ids(program.messages[index])
            expected += GENERATION_HEADER
            assert fresh.prompt_ids(call) == expected
            prompt = prompts.prompt_ids(call)
            assert prompt == expected
            extended = prompt + [7, 8, 9] * 11  # a resumed spell: prompt + generated ids
            assert prompts.block_hashes(call, extended, 16) == hash_token_blocks(extended, 16)
