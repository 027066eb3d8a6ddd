"""Workload generators: registry, determinism, program shapes, tool time, mix, arrivals."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter

import pytest

from autellix.loadgen.arrivals import make_workload, offline_arrivals, poisson_arrivals
from autellix.loadgen.program import call_messages, call_prompt_tokens
from autellix.loadgen.workloads import WORKLOADS, ToolTime, bfcl, get_workload, lats, mixed, sharegpt
from autellix.loadgen.workloads.base import WorkloadDataError, lognormal_tokens, package_data_dir
from autellix.loadgen.workloads.sharegpt_data import load_corpus
from autellix.loadgen.workloads.text import count_tokens, fit_text, prose
from autellix.simulator.tokenizer import apply_chat_template, encode

SMALL = {"sharegpt": 12, "bfcl": 12, "lats": 4, "mixed": 6}


def test_registry_lists_the_four_workloads() -> None:
    assert sorted(WORKLOADS) == ["bfcl", "lats", "mixed", "sharegpt"]
    for name, workload in WORKLOADS.items():
        assert workload.name == name and workload.description
        workload.params_type()  # every workload has default parameters
    with pytest.raises(ValueError, match="unknown workload 'nope'; known: bfcl, lats, mixed, sharegpt"):
        get_workload("nope")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_programs_other_seed_other_programs(name: str) -> None:
    first = make_workload(name, SMALL[name], 2.0, seed=11)
    again = make_workload(name, SMALL[name], 2.0, seed=11)
    other = make_workload(name, SMALL[name], 2.0, seed=12)
    assert first == again
    assert first != other
    assert len(first) == SMALL[name]
    assert len({p.program_id for p in first}) == len(first)
    assert [p.program_id for p in first][:1] == [f"{name}-s11-00000"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_single_program_generation_is_deterministic(name: str) -> None:
    workload = get_workload(name)
    params = workload.params_type()
    one = workload.generate_program(random.Random(5), params, "p", None)
    two = workload.generate_program(random.Random(5), params, "p", None)
    assert one == two and one.program_id == "p" and one.arrival_time == 0.0


@pytest.mark.parametrize("name", ["sharegpt", "bfcl"])
def test_chains_replay_a_growing_history(name: str) -> None:
    for program in make_workload(name, 10, None, seed=3):
        assert program.is_chain and program.workload == name
        for previous, call in zip(program.calls, program.calls[1:], strict=False):
            # The next prompt extends the previous prompt with its recorded reply (prefix reuse).
            assert previous.reply is not None
            assert call.prompt[: len(previous.prompt) + 1] == (*previous.prompt, previous.reply)
            assert program.messages[previous.reply].role == "assistant"
        last = call_messages(program, program.calls[-1])
        assert last[-1]["role"] == "user"


def test_sharegpt_answers_are_as_long_as_the_forced_output() -> None:
    for program in make_workload("sharegpt", 10, None, seed=4):
        for call in program.calls:
            assert call.reply is not None
            recorded = len(encode(program.messages[call.reply].content))
            assert abs(recorded - call.output_tokens) <= max(3, call.output_tokens // 50)


def test_bfcl_programs_carry_real_schemas_and_ground_truth_calls() -> None:
    for program in make_workload("bfcl", 10, None, seed=5):
        system = program.messages[0]
        assert system.role == "system" and '"parameters"' in system.content
        assert count_tokens(system.content) > 1000  # whole tool classes, as the benchmark offers them
        replies = [program.messages[c.reply].content for c in program.calls if c.reply is not None]
        assert any(r.startswith("[") and r.endswith(")]") for r in replies)
        assert program.num_calls <= bfcl.Params().max_calls
        assert program.metadata["category"] in bfcl.Params().categories


def test_bfcl_programs_with_the_same_tools_share_one_system_text_object() -> None:
    programs = make_workload("bfcl", 60, None, seed=6)
    by_text: dict[str, set[int]] = {}
    for program in programs:
        by_text.setdefault(program.messages[0].content, set()).add(id(program.messages[0].content))
    assert len(by_text) < len(programs)  # tool sets repeat across programs
    assert all(len(ids) == 1 for ids in by_text.values())


def test_lats_is_a_dag_of_parallel_samples_then_evaluations() -> None:
    params = lats.Params()
    for program in make_workload("lats", 5, None, seed=7):
        assert program.kind == "dag"
        width = params.n_children
        roots = program.roots()
        assert roots == tuple(range(width))
        assert len({program.calls[r].prompt for r in roots}) == 1  # the samples share one prompt
        assert {program.calls[r].thread for r in roots} == set(range(width))
        assert program.max_parallelism() == width
        evaluations = program.calls[width : 2 * width]
        assert [e.parents for e in evaluations] == [(k,) for k in range(width)]
        iterations = program.metadata["iterations"]
        assert isinstance(iterations, int) and 1 <= iterations <= params.max_iterations
        assert 2 * iterations <= program.critical_path_calls() <= 3 * iterations
        assert program.num_calls >= 2 * width * iterations


def test_tool_time_changes_delays_only() -> None:
    quiet = make_workload("lats", 3, None, seed=8)
    searching = make_workload("lats", 3, None, seed=8, params=lats.Params(search_time=ToolTime.web_search()))
    for a, b in zip(quiet, searching, strict=True):
        assert a.messages == b.messages
        assert [c.prompt for c in a.calls] == [c.prompt for c in b.calls]
        assert all(c.tool_delay == 0.0 for c in a.calls)
    delays = [c.tool_delay for p in searching for c in p.calls if c.tool_delay > 0]
    assert len(delays) > 100
    assert statistics.mean(delays) == pytest.approx(1.9, rel=0.25)


def test_tool_time_distributions() -> None:
    rng = random.Random(1)
    assert ToolTime().sample(rng) == 0.0
    assert ToolTime.fixed(0.25).sample(rng) == 0.25
    draws = [ToolTime.web_search().sample(rng) for _ in range(20000)]
    assert statistics.mean(draws) == pytest.approx(1.9, rel=0.05)
    assert statistics.pstdev(draws) == pytest.approx(2.1, rel=0.15)
    with pytest.raises(ValueError):
        ToolTime("gamma", 1.0)
    tokens = [lognormal_tokens(rng, 73.0, 0.4) for _ in range(20000)]
    assert statistics.mean(tokens) == pytest.approx(73.0, rel=0.02)


@pytest.mark.parametrize("n", [3, 7, 30])
def test_mixed_is_an_equal_interleaved_mix(n: int) -> None:
    programs = make_workload("mixed", n, 1.0, seed=9)
    counts = Counter(p.workload for p in programs)
    assert set(counts) == {"sharegpt", "bfcl", "lats"}
    assert max(counts.values()) - min(counts.values()) <= 1
    for block in range(0, n - n % 3, 3):  # every block of three holds one of each
        assert {p.workload for p in programs[block : block + 3]} == {"sharegpt", "bfcl", "lats"}
    assert [p.program_id for p in programs] == [f"mixed-s9-{i:05d}" for i in range(n)]


def test_mixed_components_can_be_restricted() -> None:
    params = mixed.Params(components=("sharegpt", "bfcl"))
    programs = make_workload("mixed", 10, None, seed=1, params=params)
    assert Counter(p.workload for p in programs) == {"sharegpt": 5, "bfcl": 5}
    with pytest.raises(ValueError):
        mixed.Params(components=("chess",))


def test_poisson_arrivals_have_the_requested_rate() -> None:
    times = poisson_arrivals(random.Random(2), 20000, rate=4.0, start=10.0)
    gaps = [b - a for a, b in zip([10.0, *times], times, strict=False)]
    assert all(g > 0 for g in gaps)
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(0.25, rel=0.05)  # exponential: sd == mean
    assert offline_arrivals(3, 1.5) == [1.5, 1.5, 1.5]
    with pytest.raises(ValueError):
        poisson_arrivals(random.Random(2), 3, rate=0.0)


def test_arrival_rate_does_not_change_program_content() -> None:
    slow = make_workload("sharegpt", 8, 0.5, seed=10)
    fast = make_workload("sharegpt", 8, 5.0, seed=10)
    offline = make_workload("sharegpt", 8, None, seed=10)
    assert [p.calls for p in slow] == [p.calls for p in fast] == [p.calls for p in offline]
    assert all(p.arrival_time == 0.0 for p in offline)
    assert slow[-1].arrival_time == pytest.approx(10 * fast[-1].arrival_time)
    assert [p.arrival_time for p in slow] == sorted(p.arrival_time for p in slow)


def test_make_workload_checks_its_params_type() -> None:
    with pytest.raises(TypeError, match="takes"):
        make_workload("bfcl", 1, None, seed=0, params=sharegpt.Params())


def test_prose_and_fit_text_hit_their_lengths() -> None:
    rng = random.Random(3)
    for target in (1, 5, 40, 300):
        assert abs(len(encode(prose(rng, target))) - target) <= 2
    source = "Short real text."
    cut = fit_text("word " * 500, 37, lambda: "unused")
    assert len(encode(cut)) == 37
    stretched = fit_text(source, 120, lambda: "More real words to continue with. " * 3)
    assert stretched.startswith(source) and len(encode(stretched)) == 120
    blob = fit_text("x" * 10000, 50, lambda: "")  # one giant piece is cut inside
    assert len(encode(blob)) == 50


def test_count_tokens_matches_the_tokenizer_on_real_text() -> None:
    programs = make_workload("sharegpt", 20, None, seed=2) + make_workload("bfcl", 5, None, seed=2)
    texts = [m.content for p in programs for m in p.messages]
    assert sum(count_tokens(t) for t in texts) == pytest.approx(sum(len(encode(t)) for t in texts), rel=1e-4)
    assert count_tokens("<|eot_id|>hello world") == len(encode("<|eot_id|>hello world"))
    # Rendered chats too (the LATS calibration and the ShareGPT prompt limit count those).
    program = make_workload("lats", 1, None, seed=2)[0]
    for call in program.calls[:12]:
        rendered = apply_chat_template(call_messages(program, call))
        assert count_tokens(rendered) == len(encode(rendered))


def test_sharegpt_prompt_limit_ends_conversations_early() -> None:
    params = sharegpt.Params(max_prompt_tokens=1500)
    programs = make_workload("sharegpt", 30, None, seed=3, params=params)
    unlimited = make_workload("sharegpt", 30, None, seed=3)
    assert sum(p.num_calls for p in programs) < sum(p.num_calls for p in unlimited)
    for program in programs:
        assert all(call_prompt_tokens(program, call) <= 1500 for call in program.calls[1:])


def test_missing_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(WorkloadDataError, match="not installed"):
        package_data_dir("no_such_package_for_autellix")
    with pytest.raises(WorkloadDataError, match="not found"):
        load_corpus(str(tmp_path / "none.json"))
    broken = tmp_path / "broken.json"
    broken.write_text(
        '[{"id": "a_0", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},'
        ' {"id": "b_0", "conversations": [{"from": "human", "value": "trunc'
    )
    corpus = load_corpus(str(broken))
    assert [c.conversation_id for c in corpus.conversations] == ["a"]
    assert corpus.conversations[0].turns == (("hi", "yo"),)


def test_sharegpt_pieces_of_one_conversation_are_merged(tmp_path) -> None:
    pieces = [
        {"id": "x_0", "conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]},
        {
            "id": "x_2",
            "conversations": [
                {"from": "gpt", "value": "a1 more"},
                {"from": "human", "value": "q2"},
                {"from": "gpt", "value": "a2"},
            ],
        },
        {"id": "y_0", "conversations": [{"from": "gpt", "value": "orphan"}, {"from": "human", "value": "q"}]},
        {"id": "z_0", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(pieces, indent=1))
    corpus = load_corpus(str(path))
    assert [c.conversation_id for c in corpus.conversations] == ["x", "z"]  # y has no answered turn
    assert corpus.conversations[0].turns == (("q1", "a1\n\na1 more"), ("q2", "a2"))
    assert len(load_corpus(str(path), max_conversations=1).conversations) == 1
