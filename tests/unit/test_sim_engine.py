"""The simulated engine schedules like vLLM V1: hand-worked schedules on the ``unit`` profile (every
step lasts 1.0), then property tests over random request streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.simulator.engine import EngineConfig, RequestOutput, SimEngine, SimRequest, StepResult
from autellix.simulator.kvcache import hash_token_blocks
from autellix.simulator.stepmodel import StepShape, get_profile
from autellix.simulator.tokenizer import generated_token_id

BS = 4


def engine(
    blocks: int = 64,
    *,
    seqs: int = 256,
    budget: int = 2048,
    caching: bool = True,
    policy: Literal["fcfs", "priority"] = "fcfs",
    profile: str = "unit",
    block_size: int = BS,
) -> SimEngine:
    config = EngineConfig(
        num_gpu_blocks=blocks,
        block_size=block_size,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        enable_prefix_caching=caching,
        policy=policy,
    )
    return SimEngine(config, get_profile(profile))


def tokens(base: int, n: int) -> list[int]:
    return [base + i for i in range(n)]


def req(rid: str, prompt: int | list[int], out: int, arrival: float = 0.0, priority: int = 0) -> SimRequest:
    ids = tokens(1000 * (1 + sum(map(ord, rid))), prompt) if isinstance(prompt, int) else prompt
    return SimRequest(rid, ids, out, arrival, priority)


def run(e: SimEngine, start: float = 0.0, limit: int = 10_000) -> list[StepResult]:
    results = []
    now = start
    while e.has_unfinished_requests():
        r = e.step(now)
        assert r.start == now
        results.append(r)
        now += r.duration
        assert len(results) < limit
    return results


def emitted(r: StepResult) -> list[tuple[str, int]]:
    return [(o.request_id, o.num_generated) for o in r.outputs]


# -- chunked prefill, token budget, max_num_seqs --------------------------------------------------


def test_chunked_prefill_splits_a_prompt_across_steps() -> None:
    e = engine(budget=4)
    e.add_request(req("A", 10, 2))
    steps = run(e)
    assert [r.num_scheduled_tokens for r in steps] == [4, 4, 2, 1]
    assert [emitted(r) for r in steps] == [[], [], [("A", 1)], [("A", 2)]]
    assert [r.start for r in steps] == [0.0, 1.0, 2.0, 3.0]
    assert all(r.duration == 1.0 for r in steps)
    last = steps[-1].outputs[0]
    assert last.finished and last.finish_reason == "length" and last.first_scheduled_time == 0.0


def test_running_requests_come_first_then_admission_fills_the_budget() -> None:
    e = engine(budget=8)
    e.add_request(req("A", 6, 3))
    e.add_request(req("B", 6, 2))
    steps = run(e)
    # Step 0: A's whole prompt (6) + 2 of B's. Step 1: A decodes (1), B finishes its prefill (4).
    assert [r.num_scheduled_tokens for r in steps] == [8, 5, 2]
    assert [emitted(r) for r in steps] == [[("A", 1)], [("A", 2), ("B", 1)], [("A", 3), ("B", 2)]]


def test_max_num_seqs_caps_running_requests() -> None:
    e = engine(seqs=2)
    for rid, out in (("A", 1), ("B", 3), ("C", 1)):
        e.add_request(req(rid, 4, out))
    r0 = e.step(0.0)
    assert emitted(r0) == [("A", 1), ("B", 1)] and r0.num_running == 1 and r0.num_waiting == 1
    state = e.request_state("C")
    assert state is not None and state.status == "waiting"
    r1 = e.step(1.0)  # A finished, so C is admitted
    assert emitted(r1) == [("B", 2), ("C", 1)]
    assert r1.outputs[1].first_scheduled_time == 1.0


# -- prefix cache --------------------------------------------------------------------------------


def test_repeated_prompt_hits_whole_blocks_capped_at_prompt_minus_one() -> None:
    e = engine()
    prompt = tokens(500, 8)  # exactly two blocks
    e.add_request(req("A", prompt, 1))
    run(e)
    e.add_request(req("B", prompt, 1))  # at most 7 tokens may hit: one block
    e.add_request(req("C", [*prompt, 9, 9, 9], 1))  # 11 tokens: both blocks
    steps = run(e)
    cached = {o.request_id: o.num_cached_tokens for r in steps for o in r.outputs}
    assert cached == {"B": 4, "C": 8}
    assert steps[0].num_scheduled_tokens == (8 - 4) + (11 - 8)
    s = e.stats
    assert (s.prefix_cache_queries, s.prefix_cache_hits) == (8 + 8 + 11, 12)


def test_a_prompt_computed_earlier_in_the_same_step_is_shared() -> None:
    # vLLM registers full blocks when it allocates them, so identical prompts admitted together
    # (parallel samples of a tree search) share the first one's blocks.
    e = engine()
    prompt = tokens(500, 9)
    for rid in ("A", "B", "C"):
        e.add_request(req(rid, prompt, 1))
    (step,) = run(e)
    assert [o.num_cached_tokens for o in step.outputs] == [0, 8, 8]
    assert step.num_scheduled_tokens == 9 + 1 + 1
    assert e.kv_cache.stats().num_cached_blocks == 2


def test_generated_tokens_are_cached_so_the_next_turn_hits_them() -> None:
    e = engine()
    prompt = tokens(500, 6)
    e.add_request(req("turn1", prompt, 5))
    run(e)
    # The client sends the history back: prompt + the 5 generated tokens + a new message.
    reply = [generated_token_id(0, "turn1", i) for i in range(5)]
    e.add_request(req("turn2", [*prompt, *reply, 1, 2, 3], 1))
    (step,) = run(e)
    # turn1 computed 6 + 4 tokens (its last token was never fed back): 2 full blocks cached.
    assert step.outputs[0].num_cached_tokens == 8


def test_token_key_and_seed_choose_the_generated_ids() -> None:
    # A server that streams generated_token_id(seed, key, i) to its client passes the same seed and
    # key, so the history the client sends back matches the engine's cached blocks.
    config = EngineConfig(num_gpu_blocks=64, block_size=BS, seed=7)
    e = SimEngine(config, get_profile("unit"))
    prompt = tokens(500, 6)
    e.add_request(SimRequest("x", prompt, 5, 0.0, token_key=12345))
    run(e)
    reply = [generated_token_id(7, 12345, i) for i in range(5)]
    e.add_request(SimRequest("y", [*prompt, *reply, 1], 1, 0.0))
    (step,) = run(e)
    assert step.outputs[0].num_cached_tokens == 8


def test_lru_eviction_drops_the_least_recently_freed_blocks_deepest_first() -> None:
    e = engine(blocks=6)
    a, b = tokens(100, 8), tokens(200, 8)
    for rid, prompt in (("A", a), ("B", b)):
        e.add_request(req(rid, prompt, 1))
        run(e)
    # Free queue now: B's blocks after A's, each request tail first. C needs 3 fresh blocks:
    # 2 never-used blocks, then A's second block (A's first block survives).
    e.add_request(req("C", tokens(300, 12), 1))
    run(e)
    assert cached_prefix(e, a) == 4 and cached_prefix(e, b) == 8
    e.add_request(req("B2", [*b, 1], 1))
    (step,) = run(e)
    assert step.outputs[0].num_cached_tokens == 8 and step.num_scheduled_tokens == 1


def cached_prefix(e: SimEngine, prompt: list[int]) -> int:
    """Tokens of ``prompt`` that are in the prefix cache (without touching it)."""
    return len(e.kv_cache.get_computed_blocks(hash_token_blocks(prompt, BS), len(prompt) + 1)) * BS


def test_prefix_caching_off_never_hits() -> None:
    e = engine(caching=False)
    for rid in ("A", "B"):
        e.add_request(req(rid, tokens(500, 9), 1))
        (step,) = run(e)
        assert step.outputs[0].num_cached_tokens == 0 and step.num_scheduled_tokens == 9
    assert e.stats.prefix_cache_hits == 0


# -- preemption ----------------------------------------------------------------------------------


def test_fcfs_preempts_the_last_admitted_and_readmits_it_first_with_its_cached_blocks() -> None:
    e = engine(blocks=4)  # 16 token slots
    e.add_request(req("A", 4, 8))
    e.add_request(req("B", 4, 8))
    results = [e.step(float(t)) for t in range(5)]
    assert all(emitted(r) == [("A", t + 1), ("B", t + 1)] for t, r in enumerate(results))
    # A and B hold 2 full blocks each. A needs a third block: B (last admitted) is preempted; its
    # deepest block is evicted for A, its first block stays cached. C arrives meanwhile.
    e.add_request(req("C", 2, 1, arrival=5.0))
    r5 = e.step(5.0)
    assert r5.preempted == ("B",) and emitted(r5) == [("A", 6)]
    assert e.waiting_ids() == ["B", "C"]  # B back at the front; no admission in a preempting step
    # B cannot fit yet (needs 3 blocks, 1 free); C would fit but there is no skipping ahead.
    r6 = e.step(6.0)
    assert emitted(r6) == [("A", 7)] and e.waiting_ids() == ["B", "C"]
    r7 = e.step(7.0)
    assert emitted(r7) == [("A", 8)] and r7.outputs[0].finished
    # B recomputes prompt + 5 generated = 9 tokens, 4 of them hit its own cached block.
    r8 = e.step(8.0)
    assert emitted(r8) == [("B", 6), ("C", 1)]
    assert r8.num_scheduled_tokens == (9 - 4) + 2
    state = e.request_state("B")
    assert state is not None and state.num_preemptions == 1 and state.num_cached_tokens == 0
    rest = run(e, 9.0)
    assert [emitted(r) for r in rest] == [[("B", 7)], [("B", 8)]]
    s = e.stats
    assert s.num_preemptions == 1 and s.preempted_prefix_cache_hits == 4 and s.generation_tokens == 17
    assert s.prompt_tokens == 4 + 4 + 5 + 2
    assert s.kv_cache_usage == 0.0


def test_priority_preempts_the_worst_running_request_even_if_already_scheduled() -> None:
    e = engine(blocks=5, policy="priority")
    e.add_request(req("B", 6, 12, arrival=0.0, priority=5))
    e.step(0.0)
    e.add_request(req("A", 4, 12, arrival=1.0, priority=0))
    e.add_request(req("C", 4, 12, arrival=2.0, priority=1))
    r1 = e.step(1.0)
    assert e.running_ids() == ["B", "A", "C"] and r1.num_scheduled_tokens == 1 + 4 + 4
    # B (first in the running list) is scheduled, A takes the last free block, C finds none: the
    # victim is B, the largest (priority, arrival), not C (FCFS's choice); B's token is given back.
    r2 = e.step(2.0)
    assert r2.preempted == ("B",)
    assert emitted(r2) == [("A", 2), ("C", 2)] and r2.num_scheduled_tokens == 2
    assert e.running_ids() == ["A", "C"] and e.waiting_ids() == ["B"]
    state = e.request_state("B")
    assert state is not None and (state.status, state.num_computed_tokens, state.num_generated) == (
        "waiting",
        0,
        2,
    )


def test_fcfs_victim_in_the_same_scenario_is_the_last_admitted() -> None:
    e = engine(blocks=5)
    e.add_request(req("B", 6, 12))
    e.step(0.0)
    e.add_request(req("A", 4, 12))
    e.add_request(req("C", 4, 12))
    e.step(1.0)
    r2 = e.step(2.0)
    assert r2.preempted == ("C",) and emitted(r2) == [("B", 3), ("A", 2)]


def test_priority_victim_may_be_the_current_request_and_the_rest_still_run() -> None:
    e = engine(blocks=6, policy="priority")
    e.add_request(req("B", 6, 12, priority=5))
    e.step(0.0)
    e.add_request(req("A", 4, 12, arrival=1.0))
    e.add_request(req("C", 4, 12, arrival=2.0, priority=1))
    for t in (1.0, 2.0):
        e.step(t)
    # B needs a block, none is free, and B itself is the worst: it steps aside; A and C decode.
    r3 = e.step(3.0)
    assert r3.preempted == ("B",) and emitted(r3) == [("A", 3), ("C", 3)] and r3.duration == 1.0


# -- priority admission, aborts, validation -------------------------------------------------------


def test_priority_admission_lower_first_ties_by_arrival_then_submission() -> None:
    e = engine(seqs=1, policy="priority")
    e.add_request(req("X", 4, 1, arrival=0.0, priority=2))
    e.add_request(req("Y", 4, 1, arrival=1.0, priority=0))
    e.add_request(req("Z", 4, 1, arrival=0.5, priority=0))
    e.add_request(req("W", 4, 1, arrival=0.0, priority=2))
    e.add_request(req("V", 4, 1, arrival=3.0, priority=-1))
    order = [o.request_id for r in run(e) for o in r.outputs]
    assert order == ["V", "Z", "Y", "X", "W"]


def test_fcfs_rejects_a_priority() -> None:
    with pytest.raises(ValueError, match="priority"):
        engine().add_request(req("A", 4, 1, priority=3))


@pytest.mark.parametrize("steps_before_abort", [0, 1, 2, 5])
def test_abort_frees_blocks_in_any_state(steps_before_abort: int) -> None:
    e = engine(budget=4)
    e.add_request(req("A", 10, 4))  # prefill chunks at steps 0-2, decodes after
    e.add_request(req("B", 3, 2))
    for t in range(steps_before_abort):
        e.step(float(t))
    assert e.abort_request("A") and not e.abort_request("A")
    state = e.request_state("A")
    assert state is not None and state.status == "aborted"
    rest = run(e, float(steps_before_abort))
    assert all(o.request_id != "A" for r in rest for o in r.outputs)
    assert e.kv_cache.num_free_blocks == e.kv_cache.num_blocks
    assert all(c == 0 for c in e.kv_cache.ref_counts)
    assert e.stats.num_aborted == 1


def test_abort_unknown_or_finished_returns_false_and_priority_queue_skips_aborted() -> None:
    e = engine(seqs=1, policy="priority")
    assert not e.abort_request("nope")
    for rid in ("A", "B", "C"):
        e.add_request(req(rid, 4, 1))
    assert e.abort_request("B") and e.stats.num_waiting == 2
    order = [o.request_id for r in run(e) for o in r.outputs]
    assert order == ["A", "C"] and not e.abort_request("A")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (SimRequest("e", [], 1, 0.0), "empty"),
        (SimRequest("z", [1, 2], 0, 0.0), "output_len"),
        (SimRequest("l", [1] * 30, 3, 0.0), "max_model_len"),
        (SimRequest("c", [1] * 20, 10, 0.0), "whole cache"),
    ],
)
def test_invalid_requests_are_rejected(bad: SimRequest, match: str) -> None:
    e = SimEngine(EngineConfig(num_gpu_blocks=6, block_size=4, max_model_len=32), get_profile("unit"))
    with pytest.raises(ValueError, match=match):
        e.add_request(bad)
    assert not e.has_unfinished_requests()


def test_duplicate_in_flight_id_is_rejected_but_a_finished_id_may_be_reused() -> None:
    e = engine()
    e.add_request(req("A", 4, 1))
    with pytest.raises(ValueError, match="already"):
        e.add_request(req("A", 4, 1))
    run(e)
    e.add_request(req("A", 4, 2))
    assert [emitted(r) for r in run(e)] == [[("A", 1)], [("A", 2)]]


def test_empty_engine_step_takes_no_time() -> None:
    r = engine().step(3.0)
    assert (r.start, r.duration, r.outputs, r.num_scheduled_tokens) == (3.0, 0.0, (), 0)
    assert engine().stats.steps == 0


# -- timing from the step model -------------------------------------------------------------------


def test_step_duration_comes_from_the_profile_shape() -> None:
    profile = get_profile("a100-llama3-8b")
    e = engine(blocks=1000, budget=2048, profile="a100-llama3-8b", block_size=16)
    e.add_request(req("A", 2048, 2))
    r0 = e.step(0.0)
    assert r0.duration == pytest.approx(profile.step_time_s(StepShape(2048, 1, 0, 2048 * 1024)))
    assert r0.duration == pytest.approx(0.1475, rel=0.01)
    e.add_request(req("B", 100, 1))
    r1 = e.step(r0.duration)  # A decodes against 2049 tokens; B prefills 100 tokens from scratch
    assert r1.duration == pytest.approx(profile.step_time_s(StepShape(101, 2, 2049, 100 * 50)))
    s = e.stats
    assert s.steps == 2 and s.busy_time == pytest.approx(r0.duration + r1.duration)


# -- determinism and properties -------------------------------------------------------------------


def scripted_run(seed: int) -> list[StepResult]:
    import random

    rng = random.Random(seed)
    e = engine(blocks=12, budget=10, seqs=4)
    shared = tokens(7000, 8)
    for i in range(20):
        prompt = shared[: rng.randrange(0, 9)] + tokens(100 * i, rng.randrange(1, 10))
        e.add_request(req(f"r{i}", prompt, rng.randrange(1, 12), arrival=float(i)))
    return run(e)


def test_engine_is_deterministic() -> None:
    a, b = scripted_run(1), scripted_run(1)
    assert a == b and any(r.preempted for r in a)


def test_quiet_steps_report_only_first_tokens_and_finishes_with_identical_state() -> None:
    loud, quiet = engine(blocks=12, budget=10, seqs=4), engine(blocks=12, budget=10, seqs=4)
    for e in (loud, quiet):
        for i in range(8):
            e.add_request(req(f"r{i}", 3 + 2 * i, 2 + i))
    full: list[RequestOutput] = []
    events: list[RequestOutput] = []
    now = 0.0
    while loud.has_unfinished_requests():
        a, b = loud.step(now), quiet.step(now, quiet=True)
        assert (a.duration, a.preempted, a.num_scheduled_tokens, a.num_running) == (
            b.duration,
            b.preempted,
            b.num_scheduled_tokens,
            b.num_running,
        )
        full += a.outputs
        events += b.outputs
        now += a.duration
    assert not quiet.has_unfinished_requests() and loud.stats == quiet.stats
    assert events == [o for o in full if o.num_generated == 1 or o.finished]
    assert len(events) < len(full)


class Arrival:
    def __init__(self, at_step: int, rid: str, prompt: list[int], out: int, priority: int) -> None:
        self.at_step, self.rid, self.prompt, self.out, self.priority = at_step, rid, prompt, out, priority


@st.composite
def workloads(draw: st.DrawFn) -> tuple[dict[str, object], list[Arrival], set[str], dict[str, int]]:
    policy = draw(st.sampled_from(["fcfs", "priority"]))
    cfg: dict[str, object] = {
        "blocks": draw(st.integers(6, 30)),
        "budget": draw(st.integers(1, 24)),
        "seqs": draw(st.integers(1, 6)),
        "caching": draw(st.booleans()),
        "policy": policy,
    }
    capacity = int(cfg["blocks"]) * BS  # type: ignore[call-overload]
    prefixes = [tokens(50_000 + 100 * k, 12) for k in range(3)]
    n = draw(st.integers(1, 14))
    arrivals = []
    for i in range(n):
        head = draw(st.sampled_from(prefixes))[: draw(st.integers(0, 12))]
        prompt = head + tokens(1000 * (i + 1), draw(st.integers(1 if not head else 0, 14)))
        out = draw(st.integers(1, 16))
        if len(prompt) + out - 1 > capacity:
            out = max(1, capacity - len(prompt))
            prompt = prompt[: capacity - out + 1]
        prio = draw(st.integers(-2, 2)) if policy == "priority" else 0
        arrivals.append(Arrival(draw(st.integers(0, 30)), f"r{i}", prompt, out, prio))
    aborted = {a.rid for a in arrivals if draw(st.booleans()) and draw(st.booleans())}
    abort_at = {rid: draw(st.integers(0, 40)) for rid in aborted}
    return cfg, arrivals, aborted, abort_at


def check_pool(e: SimEngine) -> None:
    kv = e.kv_cache
    assert all(c >= 0 for c in kv.ref_counts)
    # The free queue holds exactly the unreferenced blocks.
    assert sorted(kv.free_queue()) == [b for b, c in enumerate(kv.ref_counts) if c == 0]
    assert 0.0 <= e.stats.kv_cache_usage <= 1.0


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_random_streams_never_lose_or_duplicate_requests(
    case: tuple[dict[str, object], list[Arrival], set[str], dict[str, int]],
) -> None:
    cfg, arrivals, aborted, abort_at = case
    e = engine(**cfg)  # type: ignore[arg-type]
    generated: dict[str, int] = {}
    finished: set[str] = set()
    really_aborted: set[str] = set()
    pending = sorted(arrivals, key=lambda a: a.at_step)
    outputs_len = {a.rid: a.out for a in arrivals}
    step = 0
    now = 0.0
    while pending or e.has_unfinished_requests():
        while pending and pending[0].at_step <= step:
            a = pending.pop(0)
            e.add_request(SimRequest(a.rid, a.prompt, a.out, float(step), a.priority))
        for rid in sorted(aborted - really_aborted - finished):
            if abort_at[rid] == step and rid in outputs_len and e.request_state(rid) is not None:
                assert e.abort_request(rid)
                really_aborted.add(rid)
        r = e.step(now)
        ids = [o.request_id for o in r.outputs]
        assert len(ids) == len(set(ids))
        assert r.duration == (1.0 if r.num_scheduled_tokens else 0.0)
        assert r.num_scheduled_tokens <= int(cfg["budget"])  # type: ignore[call-overload]
        assert r.num_running <= int(cfg["seqs"])  # type: ignore[call-overload]
        if e.has_unfinished_requests() or pending:
            assert r.num_scheduled_tokens > 0 or not e.has_unfinished_requests()
        for o in r.outputs:
            assert o.request_id not in finished and o.request_id not in really_aborted
            assert o.new_tokens == 1 and o.num_generated == generated.get(o.request_id, 0) + 1
            generated[o.request_id] = o.num_generated
            assert o.finished == (o.num_generated == outputs_len[o.request_id])
            if o.finished:
                finished.add(o.request_id)
        check_pool(e)
        now += r.duration
        step += 1
        assert step < 5000
    assert finished | really_aborted == set(outputs_len) and not finished & really_aborted
    assert all(generated[rid] == outputs_len[rid] for rid in finished)
    kv = e.kv_cache
    assert all(c == 0 for c in kv.ref_counts) and kv.num_free_blocks == kv.num_blocks
    s = e.stats
    assert (s.num_running, s.num_waiting, s.kv_cache_usage) == (0, 0, 0.0)
    assert s.generation_tokens == sum(generated.values())
    assert s.num_finished == len(finished) and s.num_aborted == len(really_aborted)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=10), st.integers(1, 64)
)
def test_every_request_generates_exactly_its_output_len(
    shapes: Sequence[tuple[int, int]], budget: int
) -> None:
    e = engine(blocks=200, budget=budget)
    for i, (prompt, out) in enumerate(shapes):
        e.add_request(req(f"q{i}", prompt, out))
    counts: dict[str, int] = {}
    for r in run(e):
        for o in r.outputs:
            counts[o.request_id] = counts.get(o.request_id, 0) + o.new_tokens
    assert counts == {f"q{i}": out for i, (_, out) in enumerate(shapes)}
