"""The program data model: DAG validation, graph helpers, chat materialisation, token counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.loadgen.program import (
    CallSpec,
    Message,
    ProgramSpec,
    call_messages,
    call_new_tokens,
    call_prompt_tokens,
    message_tokens,
    new_message_indexes,
)
from autellix.simulator.tokenizer import apply_chat_template, encode


def chat(turns: int = 3) -> ProgramSpec:
    """A chain: system, then (user, assistant) per turn; call j sees everything up to user turn j."""
    messages = [Message("system", "You are terse.")]
    calls = []
    for j in range(turns):
        messages += [Message("user", f"Question number {j}?"), Message("assistant", f"Answer {j}.")]
        calls.append(CallSpec(j, tuple(range(2 * j + 2)), 5 + j, (j - 1,) if j else (), reply=2 * j + 2))
    return ProgramSpec("chat", "test", 0.0, tuple(messages), tuple(calls))


def diamond() -> ProgramSpec:
    """0 -> (1, 2) in parallel -> 3."""
    messages = (Message("user", "plan"), Message("user", "branch a"), Message("user", "branch b"))
    calls = (
        CallSpec(0, (0,), 10),
        CallSpec(1, (0, 1), 20, (0,), thread=1),
        CallSpec(2, (0, 2), 30, (0,), thread=2, tool_delay=1.5),
        CallSpec(3, (0,), 40, (1, 2)),
    )
    return ProgramSpec("diamond", "test", 2.0, messages, calls)


def test_chain_helpers() -> None:
    program = chat(3)
    assert program.is_chain and program.kind == "chain"
    assert program.roots() == (0,)
    assert program.leaves() == (2,)
    assert program.children() == ((1,), (2,), ())
    assert program.critical_path_calls() == 3
    assert program.max_parallelism() == 1
    assert program.total_output_tokens == 5 + 6 + 7
    assert program.num_calls == 3
    assert hash(program) == hash(chat(3)) and program == chat(3)  # usable as a dict key


def test_dag_helpers() -> None:
    program = diamond()
    assert not program.is_chain and program.kind == "dag"
    assert program.roots() == (0,)
    assert program.leaves() == (3,)
    assert program.children() == ((1, 2), (3,), (3,), ())
    assert program.critical_path_calls() == 3
    assert program.max_parallelism() == 2
    # Weighted: exec time = output tokens / 10, plus the tool delay of call 2.
    assert program.critical_path(lambda c: c.output_tokens / 10 + c.tool_delay) == pytest.approx(1 + 4.5 + 4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CallSpec(1, (0,), 5, (1,)), "parents must be earlier"),
        (lambda: CallSpec(2, (0,), 5, (1, 0)), "ascending"),
        (lambda: CallSpec(2, (0,), 5, (1, 1)), "ascending"),
        (lambda: CallSpec(0, (), 5), "at least one message"),
        (lambda: CallSpec(0, (0,), 0), "output_tokens"),
        (lambda: CallSpec(0, (0,), 5, tool_delay=-1.0), "tool_delay"),
        (lambda: CallSpec(0, (0,), 5, tool_delay=float("nan")), "tool_delay"),
        (lambda: CallSpec(0, (0,), 5, thread=-1), "thread"),
        (lambda: Message("tool", "x"), "role"),
    ],
)
def test_invalid_calls_are_rejected(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("calls", "arrival", "message"),
    [
        ((), 0.0, "at least one call"),
        ((CallSpec(1, (0,), 5),), 0.0, "has index 1"),
        ((CallSpec(0, (3,), 5),), 0.0, "outside the pool"),
        ((CallSpec(0, (0,), 5, reply=9),), 0.0, "reply is outside"),
        ((CallSpec(0, (0,), 5),), -1.0, "arrival_time"),
    ],
)
def test_invalid_programs_are_rejected(calls, arrival: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProgramSpec("p", "test", arrival, (Message("user", "hi"),), calls)


def test_call_messages_and_prompt_tokens_use_the_tokenizer() -> None:
    program = chat(2)
    messages = call_messages(program, 1)
    assert messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Question number 0?"},
        {"role": "assistant", "content": "Answer 0."},
        {"role": "user", "content": "Question number 1?"},
    ]
    assert call_prompt_tokens(program, 1) == len(encode(apply_chat_template(messages)))
    # Consecutive calls of a chain share a growing prefix.
    first = encode(apply_chat_template(call_messages(program, 0), add_generation_prompt=False))
    second = encode(apply_chat_template(call_messages(program, 1)))
    assert second[: len(first) - 1] == first[:-1]


def test_new_messages_exclude_parent_prompt_and_recorded_reply() -> None:
    program = chat(3)
    assert new_message_indexes(program, 0) == (0, 1)  # a root: the whole prompt
    assert new_message_indexes(program, 2) == (5,)  # only the new user turn
    assert call_new_tokens(program, 2) == message_tokens(program.messages[5])
    assert message_tokens(Message("user", "Question number 2?")) > len(encode("Question number 2?"))
    # In a DAG a call's new input is relative to all its parents.
    assert new_message_indexes(diamond(), 3) == ()
    assert new_message_indexes(diamond(), 2) == (2,)


@st.composite
def random_dags(draw: st.DrawFn) -> ProgramSpec:
    n = draw(st.integers(1, 25))
    calls = []
    for i in range(n):
        parents = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        calls.append(CallSpec(i, (0,), draw(st.integers(1, 50)), tuple(parents)))
    return ProgramSpec("g", "test", 0.0, (Message("user", "x"),), tuple(calls))


@settings(max_examples=60, deadline=None)
@given(random_dags())
def test_graph_helpers_agree_with_each_other(program: ProgramSpec) -> None:
    children = program.children()
    for call in program.calls:
        for parent in call.parents:
            assert call.index in children[parent]
    assert sum(len(c) for c in children) == sum(len(c.parents) for c in program.calls)
    assert set(program.roots()) == {c.index for c in program.calls if not c.parents}
    assert set(program.leaves()) == {i for i, c in enumerate(children) if not c}
    # The longest path is at least as long as any parent->child step and at most every call.
    assert 1 <= program.critical_path_calls() <= program.num_calls
    weighted = program.critical_path(lambda c: float(c.output_tokens))
    assert max(c.output_tokens for c in program.calls) <= weighted <= program.total_output_tokens
    assert program.is_chain == (
        program.critical_path_calls() == program.num_calls
        and program.max_parallelism() == 1
        and all(len(c.parents) <= 1 for c in program.calls)
    )
