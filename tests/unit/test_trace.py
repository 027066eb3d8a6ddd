"""JSONL traces: exact round trips, shared texts, hand-written files, errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autellix.loadgen import trace
from autellix.loadgen.arrivals import make_workload
from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.trace import TraceError, read_trace, write_trace

HAND_WRITTEN = """\
{"program_id": "chat-1", "arrival_time": 0.5, "messages": [["user", "Hi!"],
 ["assistant", "Hello! How can I help?"], ["user", "Tell me a joke."]],
 "calls": [{"prompt": [0], "output_tokens": 12, "reply": 1},
           {"prompt": [0, 1, 2], "output_tokens": 40, "parents": [0]}]}
"""


def one_line(text: str) -> str:
    return json.dumps(json.loads(text)) + "\n"


def good_program(**overrides: object) -> dict[str, object]:
    program: dict[str, object] = {
        "program_id": "p",
        "messages": [["user", "hello"]],
        "calls": [{"prompt": [0], "output_tokens": 3}],
    }
    program.update(overrides)
    return program


@pytest.mark.parametrize("name", ["mixed", "sharegpt", "bfcl"])
def test_round_trip_is_exact(tmp_path: Path, name: str) -> None:
    programs = make_workload(name, 9, 1.5, seed=4)
    path = tmp_path / "t.jsonl"
    write_trace(path, programs)
    assert read_trace(path) == programs


def test_same_seed_gives_a_byte_identical_trace(tmp_path: Path) -> None:
    write_trace(tmp_path / "a.jsonl", make_workload("mixed", 6, 2.0, seed=21))
    write_trace(tmp_path / "b.jsonl", make_workload("mixed", 6, 2.0, seed=21))
    write_trace(tmp_path / "c.jsonl", make_workload("mixed", 6, 2.0, seed=22))
    a, b, c = ((tmp_path / f"{x}.jsonl").read_bytes() for x in "abc")
    assert a == b and a != c
    assert a.isascii()


def test_shared_texts_are_stored_once_in_the_header(tmp_path: Path) -> None:
    programs = make_workload("bfcl", 30, None, seed=8)
    path = tmp_path / "t.jsonl"
    write_trace(path, programs)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["autellix_trace"] == trace.FORMAT_VERSION and header["shared"]
    uses: dict[str, int] = {}
    for program in programs:
        uses[program.messages[0].content] = uses.get(program.messages[0].content, 0) + 1
    assert max(uses.values()) >= 2
    for program, line in zip(programs, lines[1:], strict=True):
        stored = json.loads(line)["messages"][0][1]
        if uses[program.messages[0].content] >= 2:
            assert stored == {
                "shared": next(k for k, v in header["shared"].items() if v == program.messages[0].content)
            }
        else:
            assert stored == program.messages[0].content


def test_hand_written_trace_without_header(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + one_line(HAND_WRITTEN) + "\n")
    (program,) = read_trace(path)
    assert program == ProgramSpec(
        "chat-1",
        "custom",
        0.5,
        (
            Message("user", "Hi!"),
            Message("assistant", "Hello! How can I help?"),
            Message("user", "Tell me a joke."),
        ),
        (CallSpec(0, (0,), 12, reply=1), CallSpec(1, (0, 1, 2), 40, (0,))),
    )
    assert program.is_chain


def test_docstring_example_is_the_tested_one() -> None:
    documented = json.loads(" ".join(line.strip() for line in HAND_WRITTEN.splitlines()))
    doc = trace.__doc__ or ""
    start = doc.index('{"program_id": "chat-1"')
    snippet = " ".join(line.strip() for line in doc[start:].split("\n\n")[0].splitlines())
    assert json.loads(snippet) == documented


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps(good_program(calls=[])), "at least one call"),
    (json.dumps(good_program(calls=[{"prompt": [0]}])), "needs 'prompt' and 'output_tokens'"),
    (
        json.dumps(good_program(calls=[{"prompt": [0], "output_tokens": 0}])),
        "output_tokens must be an integer >= 1",
    ),
    (
        json.dumps(good_program(calls=[{"prompt": [0], "output_tokens": 2, "parents": [0]}])),
        "parents must be earlier",
    ),
    (json.dumps(good_program(calls=[{"prompt": [4], "output_tokens": 2}])), "outside the pool"),
    (json.dumps(good_program(calls=[{"prompt": [0], "output_tokens": 2, "speed": 1}])), "unknown field"),
    (json.dumps(good_program(messages=[["robot", "x"]])), "role"),
    (json.dumps(good_program(messages=[["user", {"shared": "s9"}]])), "unknown shared text"),
    (json.dumps(good_program(arrival_time="soon")), "arrival_time must be a number"),
    (json.dumps(good_program(colour="red")), "unknown field"),
    (json.dumps({"messages": [], "calls": []}), "missing field 'program_id'"),
    (json.dumps({"autellix_trace": 1, "shared": {}}), "header must be the first line"),
    (json.dumps(good_program()), "program_id 'p' repeats line 1"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_line_is_reported_with_its_number(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good_program()) + "\n\n" + line + "\n")
    with pytest.raises(TraceError, match=message) as caught:
        read_trace(path)
    assert "bad.jsonl:3: " in str(caught.value)


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"autellix_trace": 2}) + "\n")
    with pytest.raises(TraceError, match=r"t.jsonl:1: unsupported trace version 2"):
        read_trace(path)
    with pytest.raises(TraceError, match="cannot open trace"):
        read_trace(tmp_path / "missing.jsonl")
