"""The stand-in tokenizer: deterministic, ~4 characters per token, round-trips its own vocabulary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.simulator import tokenizer as tok

PROSE = (
    "The quick brown fox jumps over the lazy dog while the committee deliberates about the "
    "implementation details of a distributed scheduling system, considering throughput and fairness. "
)


def test_same_text_same_ids_and_different_text_differs() -> None:
    assert tok.encode(PROSE) == tok.encode(PROSE)
    assert tok.encode("hello world") != tok.encode("hello there")


def test_ids_are_stable_across_processes() -> None:
    # Python's str hash is salted per process; ours must not be.
    code = (
        "from autellix.simulator import tokenizer as t; "
        "print(t.encode('hello, world!'), t.generated_token_id(3, 'k', 7))"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().strip() == f"{tok.encode('hello, world!')} {tok.generated_token_id(3, 'k', 7)}"


def test_english_prose_is_about_four_characters_per_token() -> None:
    text = PROSE * 20
    ratio = len(text) / len(tok.encode(text))
    assert 3.5 <= ratio <= 4.6


@pytest.mark.parametrize(
    ("text", "count"), [("a", 1), (" dog", 1), (" jumps", 1), (" implementation", 3), ("", 0)]
)
def test_piece_lengths(text: str, count: int) -> None:
    assert len(tok.encode(text)) == count


def test_prefix_text_gives_prefix_ids() -> None:
    # Whole pieces: cutting between words keeps the ids of the first part.
    first, second = "Hello there, my friend.", " How are you today?"
    assert tok.encode(first + second)[: len(tok.encode(first))] == tok.encode(first)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_ids_are_in_range_and_never_special_for_plain_text(text: str) -> None:
    ids = tok.encode(text.replace("<|", "<"))
    assert all(tok.NUM_SPECIAL <= i < tok.VOCAB_SIZE for i in ids)


def test_special_markers_map_to_special_ids() -> None:
    assert tok.encode("<|begin_of_text|><|eot_id|>") == [1, 5]
    assert tok.decode([1, 5]) == "<|begin_of_text|><|eot_id|>"


def test_vocabulary_words_are_distinct() -> None:
    words = [tok.vocab_word(i) for i in range(tok.NUM_SPECIAL, tok.VOCAB_SIZE)]
    assert len(set(words)) == len(words)
    assert all(w.startswith(" ") and w[1:].isalpha() for w in words)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31), st.text(min_size=1, max_size=8), st.integers(1, 300))
def test_generated_ids_round_trip_through_text(seed: int, key: str, n: int) -> None:
    ids = [tok.generated_token_id(seed, key, i) for i in range(n)]
    assert all(tok.NUM_SPECIAL <= i < tok.VOCAB_SIZE for i in ids)
    assert tok.encode(tok.decode(ids)) == ids


def test_generated_ids_depend_on_seed_key_and_index() -> None:
    a = [tok.generated_token_id(0, "req-1", i) for i in range(20)]
    assert a == [tok.generated_token_id(0, "req-1", i) for i in range(20)]
    assert a != [tok.generated_token_id(1, "req-1", i) for i in range(20)]
    assert a != [tok.generated_token_id(0, "req-2", i) for i in range(20)]
    assert len(set(a)) > 15
    stream = tok.generated_token_stream(0, "req-1")
    assert a == [tok.stream_token_id(stream, i) for i in range(20)]


def test_chat_history_is_a_token_prefix_of_the_next_turn() -> None:
    turn1 = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    reply = tok.decode([tok.generated_token_id(0, "r1", i) for i in range(12)])
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "Another one?"}]
    p1 = tok.encode(tok.apply_chat_template(turn1))
    p2 = tok.encode(tok.apply_chat_template(turn2))
    assert p2[: len(p1)] == p1
    # The reply's ids appear verbatim right after the first prompt (they round-trip through text).
    assert p2[len(p1) : len(p1) + 12] == [tok.generated_token_id(0, "r1", i) for i in range(12)]
    text = tok.apply_chat_template(turn1)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert not tok.apply_chat_template(turn1, add_generation_prompt=False).endswith("\n\n")
