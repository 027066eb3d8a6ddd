"""JSONL trace files: programs you can write, read back exactly, edit or write by hand.

Format (version 1), one JSON object per line, UTF-8 (the writer escapes to pure ASCII):

- Optional first line, the header: ``{"autellix_trace": 1, "shared": {"KEY": "text", ...}}``. It
  stores once the long texts several programs share (tool schemas, system prompts).
- Every other non-blank line is one program::

    {"program_id": str, "workload": str = "custom", "arrival_time": float = 0,
     "messages": [[role, content], ...],   # the pool; content is a str or {"shared": KEY}
     "calls": [{"prompt": [int, ...],     # indexes into messages, in chat order
                "output_tokens": int,      # forced output length (max_tokens, ignore_eos)
                "parents": [int, ...] = [],  # earlier calls this one waits for
                "thread": int = 0, "tool_delay": float = 0, "reply": int | null = null}, ...],
     "metadata": {...} = {}}

  Calls are listed in order; a call's index is its position. Roles: system, user, assistant.
  ``reply`` names the message holding the call's recorded answer (what later calls replay as
  history); see ``program.py`` for the semantics of every field.

A minimal hand-written trace (a two-turn chat arriving at t = 0.5 s)::

    {"program_id": "chat-1", "arrival_time": 0.5, "messages": [["user", "Hi!"],
     ["assistant", "Hello! How can I help?"], ["user", "Tell me a joke."]],
     "calls": [{"prompt": [0], "output_tokens": 12, "reply": 1},
               {"prompt": [0, 1, 2], "output_tokens": 40, "parents": [0]}]}

Rules: ``read_trace(write_trace(p)) == p`` exactly (floats are written with ``repr``). The writer
puts a text in the header when it is at least ``SHARED_MIN_CHARS`` long and appears in two or more
programs; it omits call fields that hold their default. Any problem in a file is reported as a
:class:`TraceError` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autellix.loadgen.program import CallSpec, Message, ProgramSpec

__all__ = [
    "FORMAT_VERSION",
    "SHARED_MIN_CHARS",
    "TraceError",
    "program_from_json",
    "program_to_json",
    "read_trace",
    "write_trace",
]

FORMAT_VERSION = 1
SHARED_MIN_CHARS = 256
HEADER_KEY = "autellix_trace"


class TraceError(ValueError):
    """A trace file (or one of its lines) is not a valid trace."""


def _shared_texts(programs: list[ProgramSpec]) -> dict[str, str]:
    """content -> key, for long texts found in at least two programs (keys in order of appearance)."""
    seen_in: dict[str, int] = {}
    for program in programs:
        for text in {m.content for m in program.messages if len(m.content) >= SHARED_MIN_CHARS}:
            seen_in[text] = seen_in.get(text, 0) + 1
    keys: dict[str, str] = {}
    for program in programs:
        for message in program.messages:
            if seen_in.get(message.content, 0) >= 2 and message.content not in keys:
                keys[message.content] = f"s{len(keys)}"
    return keys


def program_to_json(program: ProgramSpec, shared: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON object of one program line; ``shared`` maps texts to header keys."""
    table = shared or {}
    messages = [
        [m.role, {"shared": table[m.content]} if m.content in table else m.content] for m in program.messages
    ]
    calls: list[dict[str, Any]] = []
    for call in program.calls:
        item: dict[str, Any] = {"prompt": list(call.prompt), "output_tokens": call.output_tokens}
        if call.parents:
            item["parents"] = list(call.parents)
        if call.thread:
            item["thread"] = call.thread
        if call.tool_delay:
            item["tool_delay"] = call.tool_delay
        if call.reply is not None:
            item["reply"] = call.reply
        calls.append(item)
    return {
        "program_id": program.program_id,
        "workload": program.workload,
        "arrival_time": program.arrival_time,
        "messages": messages,
        "calls": calls,
        "metadata": dict(program.metadata),
    }


def write_trace(path: str | Path, programs: Iterable[ProgramSpec]) -> None:
    """Write ``programs`` (header first) to ``path``."""
    items = list(programs)
    shared = _shared_texts(items)
    header = {HEADER_KEY: FORMAT_VERSION, "shared": {key: text for text, key in shared.items()}}
    with Path(path).open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(header, separators=(",", ":")) + "\n")
        for program in items:
            handle.write(json.dumps(program_to_json(program, shared), separators=(",", ":")) + "\n")


def _int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a JSON list, got {type(value).__name__}")
    return value


def _message(item: object, position: int, shared: Mapping[str, str]) -> Message:
    pair = _list(item, f"messages[{position}]")
    if len(pair) != 2 or not isinstance(pair[0], str):
        raise ValueError(f"messages[{position}] must be [role, content]")
    content = pair[1]
    if isinstance(content, dict):
        key = content.get("shared")
        if set(content) != {"shared"} or not isinstance(key, str) or key not in shared:
            raise ValueError(f"messages[{position}] refers to unknown shared text {content!r}")
        content = shared[key]
    if not isinstance(content, str):
        raise ValueError(f"messages[{position}] content must be a string or {{'shared': key}}")
    return Message(pair[0], content)


def _call(item: object, index: int) -> CallSpec:
    if not isinstance(item, dict):
        raise ValueError(f"calls[{index}] must be a JSON object")
    unknown = set(item) - {"prompt", "output_tokens", "parents", "thread", "tool_delay", "reply"}
    if unknown:
        raise ValueError(f"calls[{index}] has unknown field(s) {sorted(unknown)}")
    if "prompt" not in item or "output_tokens" not in item:
        raise ValueError(f"calls[{index}] needs 'prompt' and 'output_tokens'")
    reply = item.get("reply")
    return CallSpec(
        index=index,
        prompt=tuple(
            _int(m, f"calls[{index}].prompt item") for m in _list(item["prompt"], f"calls[{index}].prompt")
        ),
        output_tokens=_int(item["output_tokens"], f"calls[{index}].output_tokens", 1),
        parents=tuple(
            _int(p, f"calls[{index}].parents item") for p in _list(item.get("parents", []), "parents")
        ),
        thread=_int(item.get("thread", 0), f"calls[{index}].thread"),
        tool_delay=_number(item.get("tool_delay", 0.0), f"calls[{index}].tool_delay"),
        reply=None if reply is None else _int(reply, f"calls[{index}].reply"),
    )


def program_from_json(obj: object, shared: Mapping[str, str] | None = None) -> ProgramSpec:
    """The program of one parsed line (ValueError saying what is wrong)."""
    if not isinstance(obj, dict):
        raise ValueError("a program line must be a JSON object")
    unknown = set(obj) - {"program_id", "workload", "arrival_time", "messages", "calls", "metadata"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    for required in ("program_id", "messages", "calls"):
        if required not in obj:
            raise ValueError(f"missing field {required!r}")
    program_id, workload, metadata = obj["program_id"], obj.get("workload", "custom"), obj.get("metadata", {})
    if not isinstance(program_id, str) or not isinstance(workload, str):
        raise ValueError("program_id and workload must be strings")
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    table = shared or {}
    messages = tuple(_message(m, i, table) for i, m in enumerate(_list(obj["messages"], "messages")))
    calls = tuple(_call(c, i) for i, c in enumerate(_list(obj["calls"], "calls")))
    arrival = _number(obj.get("arrival_time", 0.0), "arrival_time")
    return ProgramSpec(program_id, workload, arrival, messages, calls, metadata)


def read_trace(path: str | Path) -> list[ProgramSpec]:
    """Every program of the trace at ``path``, in file order."""
    file = Path(path)
    programs: list[ProgramSpec] = []
    shared: dict[str, str] = {}
    seen: dict[str, int] = {}
    first = True
    try:
        handle = file.open(encoding="utf-8")
    except OSError as error:
        raise TraceError(f"{file}: cannot open trace: {error.strerror or error}") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{file}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise TraceError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            if isinstance(obj, dict) and HEADER_KEY in obj:
                if not first:
                    raise TraceError(f"{where}: the header must be the first line")
                shared = _header(obj, where)
                first = False
                continue
            first = False
            try:
                program = program_from_json(obj, shared)
            except ValueError as error:
                raise TraceError(f"{where}: {error}") from None
            if program.program_id in seen:
                raise TraceError(
                    f"{where}: program_id {program.program_id!r} repeats line {seen[program.program_id]}"
                )
            seen[program.program_id] = number
            programs.append(program)
    return programs


def _header(obj: dict[str, Any], where: str) -> dict[str, str]:
    if obj[HEADER_KEY] != FORMAT_VERSION:
        raise TraceError(
            f"{where}: unsupported trace version {obj[HEADER_KEY]!r} (this reader: {FORMAT_VERSION})"
        )
    shared = obj.get("shared", {})
    if not isinstance(shared, dict) or not all(isinstance(v, str) for v in shared.values()):
        raise TraceError(f"{where}: header 'shared' must map keys to texts")
    return {str(k): v for k, v in shared.items()}
