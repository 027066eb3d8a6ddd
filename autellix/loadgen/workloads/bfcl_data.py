"""Reads BFCL multi-turn entries and function docs from the installed ``bfcl-eval`` package.

Files used (reference.md §5), all JSON Lines under ``bfcl_eval/data``:

- ``BFCL_v4_multi_turn_{category}.json``: ``{"id", "question": [[{"role", "content"}], ...] (one
  list of user messages per turn, possibly empty), "involved_classes", "excluded_function",
  "missed_function" (miss_func only: turn index -> names withheld until that turn), ...}``.
- ``possible_answer/BFCL_v4_multi_turn_{category}.json``: ``{"id", "ground_truth": [[call, ...],
  ...]}``, the calls a correct agent makes in each turn, as Python call strings.
- ``multi_turn_func_doc/{class file}.json``: one function schema per line (name, description,
  parameters, response); ~1.5k-5k tokens per tool class.

The package is located with ``importlib.util.find_spec`` (its ``__init__`` is never run) and the
result is cached per process (``functools.cache``); loading the 800 entries takes ~50 ms.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from autellix.loadgen.workloads.base import WorkloadDataError, package_data_dir

__all__ = ["CATEGORIES", "BFCLCorpus", "BFCLEntry", "FunctionDoc", "load_corpus"]

CATEGORIES = ("base", "long_context", "miss_func", "miss_param")

# Tool class -> function doc file, as the benchmark's multi-turn categories name them.
CLASS_FILES: Mapping[str, str] = MappingProxyType(
    {
        "GorillaFileSystem": "gorilla_file_system.json",
        "MathAPI": "math_api.json",
        "MessageAPI": "message_api.json",
        "TwitterAPI": "posting_api.json",
        "TicketAPI": "ticket_api.json",
        "TradingBot": "trading_bot.json",
        "TravelAPI": "travel_booking.json",
        "VehicleControlAPI": "vehicle_control.json",
    }
)


@dataclass(frozen=True, slots=True)
class FunctionDoc:
    name: str
    text: str  # the schema line exactly as the file has it (what the system prompt lists)
    response_fields: tuple[tuple[str, str], ...]  # (field name, JSON type) of the documented result


@dataclass(frozen=True, slots=True)
class BFCLEntry:
    entry_id: str
    category: str
    questions: tuple[str, ...]  # per turn: the user's message ("" when the turn has none)
    ground_truth: tuple[tuple[str, ...], ...]  # per turn: the calls, e.g. "cd(folder='document')"
    classes: tuple[str, ...]
    excluded: tuple[str, ...]  # functions never offered to the model
    missed: tuple[tuple[int, tuple[str, ...]], ...]  # (turn, functions first offered in that turn)


@dataclass(frozen=True, slots=True)
class BFCLCorpus:
    entries: tuple[BFCLEntry, ...]
    docs: Mapping[str, tuple[FunctionDoc, ...]]  # tool class -> its functions


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise WorkloadDataError(f"BFCL data file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _doc(line: dict[str, Any], text: str) -> FunctionDoc:
    response = line.get("response")
    fields: list[tuple[str, str]] = []
    if isinstance(response, dict) and isinstance(response.get("properties"), dict):
        for field_name, spec in response["properties"].items():
            kind = spec.get("type", "string") if isinstance(spec, dict) else "string"
            fields.append((str(field_name), str(kind)))
    return FunctionDoc(str(line.get("name", "")), text, tuple(fields))


def _docs(directory: Path) -> dict[str, tuple[FunctionDoc, ...]]:
    docs: dict[str, tuple[FunctionDoc, ...]] = {}
    for tool_class, file_name in CLASS_FILES.items():
        path = directory / "multi_turn_func_doc" / file_name
        if not path.is_file():
            raise WorkloadDataError(f"BFCL function docs not found: {path}")
        with path.open(encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        docs[tool_class] = tuple(_doc(json.loads(line), line) for line in lines)
    return docs


def _entry(category: str, raw: dict[str, Any], truth: dict[str, Any]) -> BFCLEntry:
    questions: list[str] = []
    for turn in raw.get("question", []):
        texts = [str(m.get("content", "")) for m in turn if isinstance(m, dict)]
        questions.append("\n\n".join(texts))
    calls = tuple(tuple(str(c) for c in turn) for turn in truth.get("ground_truth", []))
    if len(calls) != len(questions):
        raise WorkloadDataError(
            f"BFCL entry {raw.get('id')}: {len(questions)} turns but {len(calls)} answers"
        )
    missed_raw = raw.get("missed_function") or {}
    missed = tuple(sorted((int(k), tuple(str(f) for f in v)) for k, v in missed_raw.items()))
    return BFCLEntry(
        entry_id=str(raw.get("id")),
        category=category,
        questions=tuple(questions),
        ground_truth=calls,
        classes=tuple(str(c) for c in raw.get("involved_classes", []) if str(c) in CLASS_FILES),
        excluded=tuple(str(f) for f in raw.get("excluded_function", []) or []),
        missed=missed,
    )


@functools.cache
def load_corpus(data_dir: str | None = None, categories: tuple[str, ...] = CATEGORIES) -> BFCLCorpus:
    """Entries of the given multi-turn categories (joined with their ground truth) and the docs."""
    directory = Path(data_dir) if data_dir is not None else package_data_dir("bfcl_eval")
    entries: list[BFCLEntry] = []
    for category in categories:
        questions = _json_lines(directory / f"BFCL_v4_multi_turn_{category}.json")
        answers = {
            str(a.get("id")): a
            for a in _json_lines(directory / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json")
        }
        for raw in questions:
            truth = answers.get(str(raw.get("id")))
            if truth is not None:
                entries.append(_entry(category, raw, truth))
    if not entries:
        raise WorkloadDataError(f"no BFCL multi-turn entries under {directory}")
    return BFCLCorpus(tuple(entries), MappingProxyType(_docs(directory)))
