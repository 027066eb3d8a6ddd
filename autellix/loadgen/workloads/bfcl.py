"""BFCL tool use: a multi-turn ReAct function-calling session is one program, a chain of calls.

Paper targets (reference.md §2): 10.75 calls per program (max 70), 735 prefill tokens per call,
34 decode tokens per call.

Interpretation of "prefill tokens per call" here: the *new* input of each call (``program.
call_new_tokens``), as for ShareGPT, and not the whole prompt. Reason: the real tool schemas of an
entry's classes are ~6k tokens, so every whole prompt is >6k tokens and a 735-token *prompt* cannot
carry them; with the schemas in the first call's system prompt the new input averages
(6.3k + user turns + tool results) / 10.75 ~ 735, and the paper's BFCL lambda range (0.2-0.8
programs/s on one 8B A100) matches ~70k prompt tokens per program without prefix caching, not ~8k.

Real (``bfcl_data``): the user turns, the tool classes and their function schemas (minus the entry's
excluded functions; miss_func's withheld functions arrive in a later user turn, as the benchmark
does), and the ground-truth calls of each turn, which are the recorded assistant replies.
Modelled:

1. ReAct steps: each ground-truth call is one LLM call whose reply is ``[call(...)]``; its result
   comes back as a user message; after the turn's calls one more LLM call answers the user in text.
2. Stuck turns: with probability ``stuck_prob`` (solved from ``calls_mean``, ~1 %) a turn does not
   converge and repeats its last call until the benchmark's limit of 20 steps per turn (real
   constant ``MAXIMUM_STEP_LIMIT``), with error results. This gives the long tail (up to
   ``max_calls`` = 70) that the 9.95 calls of the data alone lack.
3. Tool results: JSON objects with the function's documented response fields, string fields filled
   with prose; lengths lognormal (cv 1) with the mean solved so that the new input per call
   averages ``prefill_tokens_mean`` (~210 tokens). Final answers: prose, mean solved from
   ``decode_tokens_mean`` (~54 tokens; function-call replies are ~19 tokens).
4. ``tool_time`` is the pause before a call that follows a tool result (default none, as in the
   paper's replay; local tools take milliseconds).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, field

from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.workloads.base import ToolTime, WorkloadDef, lognormal_tokens, program_rngs
from autellix.loadgen.workloads.bfcl_data import CATEGORIES, BFCLEntry, FunctionDoc, load_corpus
from autellix.loadgen.workloads.text import count_tokens, prose

__all__ = ["WORKLOAD", "Params", "generate_program"]

NAME = "bfcl"
FRAMING_TOKENS = 5
SYSTEM_INSTRUCTION = (
    "You complete the user's tasks by calling functions. Read the request and the available functions,"
    " then reply with the next function call written as [func_name(param=value, ...)], one step at a"
    " time; the execution result of each call comes back before your next step. When the request is"
    " done, or cannot be done with these functions, answer the user in plain text without a call.\n\n"
    "Available functions (JSON schema, one per line):\n"
)
NEW_FUNCTIONS_NOTE = "More functions are now available (JSON schema, one per line):\n"
CONTINUE_NOTE = "Please go on with the task."


@dataclass(frozen=True, slots=True)
class Params:
    calls_mean: float | None = 10.75  # sets the stuck-turn probability; None = no stuck turns
    max_calls: int = 70
    step_limit: int = 20  # BFCL's MAXIMUM_STEP_LIMIT: steps per turn before it is cut
    prefill_tokens_mean: float = 735.0  # new input tokens per call (sets the tool-result length)
    decode_tokens_mean: float = 34.0  # output tokens per call (sets the final-answer length)
    tool_result_cv: float = 1.0
    answer_cv: float = 0.5
    tool_time: ToolTime = field(default_factory=ToolTime)
    categories: tuple[str, ...] = CATEGORIES
    data_dir: str | None = None  # default: the installed bfcl-eval package's data directory

    def __post_init__(self) -> None:
        if self.max_calls < 1 or self.step_limit < 2:
            raise ValueError("max_calls must be >= 1 and step_limit >= 2")


@dataclass(frozen=True, slots=True)
class _Entry:
    entry: BFCLEntry
    system: str  # shared by every entry with the same functions on offer
    user_turns: tuple[str, ...]
    docs: dict[str, FunctionDoc]


@dataclass(frozen=True, slots=True)
class _Model:
    entries: tuple[_Entry, ...]  # sorted by size: a quantile picks a short or a long session
    stuck_prob: float
    result_tokens_mean: float
    answer_tokens_mean: float


def _prepare(
    entry: BFCLEntry, all_docs: dict[str, tuple[FunctionDoc, ...]], systems: dict[str, str]
) -> _Entry:
    docs = {d.name: d for c in entry.classes for d in all_docs[c]}
    withheld = {name for _, names in entry.missed for name in names}
    offered = [d.text for d in docs.values() if d.name not in entry.excluded and d.name not in withheld]
    system = SYSTEM_INSTRUCTION + "\n".join(offered)
    system = systems.setdefault(system, system)  # one str object per distinct prompt
    revealed = dict(entry.missed)
    turns: list[str] = []
    for t, question in enumerate(entry.questions):
        parts = [question] if question else []
        if t in revealed:
            new_docs = [docs[name].text for name in revealed[t] if name in docs]
            parts.append(NEW_FUNCTIONS_NOTE + "\n".join(new_docs))
        turns.append("\n\n".join(parts) if parts else CONTINUE_NOTE)
    return _Entry(entry, system, tuple(turns), docs)


def _repeat_call(entry: BFCLEntry, turn: int) -> str:
    for calls in (entry.ground_truth[turn], *reversed(entry.ground_truth[:turn]), *entry.ground_truth):
        if calls:
            return calls[-1]
    return "ls()"


@functools.cache
def _model(params: Params) -> _Model:
    corpus = load_corpus(params.data_dir, params.categories)
    systems: dict[str, str] = {}
    all_docs = dict(corpus.docs)
    prepared = [_prepare(e, all_docs, systems) for e in corpus.entries]
    limit = params.step_limit
    base_calls, slack, results, stuck_results, fixed_new, call_out, stuck_out, finals, stuck_turns = (
        [0.0] * len(prepared) for _ in range(9)
    )
    system_tokens = {text: count_tokens(text) for text in systems}
    for i, p in enumerate(prepared):
        fixed_new[i] = system_tokens[p.system] + FRAMING_TOKENS
        for t, truth in enumerate(p.entry.ground_truth):
            k = len(truth)
            fixed_new[i] += count_tokens(p.user_turns[t]) + FRAMING_TOKENS
            base_calls[i] += k + 1
            results[i] += k
            call_out[i] += sum(count_tokens(f"[{c}]") for c in truth)
            finals[i] += 1
            if k + 1 < limit:
                slack[i] += limit - k - 1
                stuck_results[i] += limit - k
                stuck_out[i] += (limit - k) * count_tokens(f"[{_repeat_call(p.entry, t)}]")
                stuck_turns[i] += 1

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    p_stuck = 0.0
    if params.calls_mean is not None and mean(slack) > 0:
        p_stuck = min(1.0, max(0.0, (params.calls_mean - mean(base_calls)) / mean(slack)))
    calls = mean(base_calls) + p_stuck * mean(slack)
    n_results = mean(results) + p_stuck * mean(stuck_results)
    result_mean = (params.prefill_tokens_mean * calls - mean(fixed_new)) / max(n_results, 1e-9)
    n_finals = mean(finals) - p_stuck * mean(stuck_turns)
    answer_mean = (params.decode_tokens_mean * calls - mean(call_out) - p_stuck * mean(stuck_out)) / n_finals
    order = sorted(range(len(prepared)), key=lambda i: (base_calls[i], fixed_new[i]))
    return _Model(
        tuple(prepared[i] for i in order),
        p_stuck,
        max(8.0, result_mean - FRAMING_TOKENS),
        max(4.0, answer_mean),
    )


def _tool_result(rng: random.Random, doc: FunctionDoc | None, tokens: int) -> str:
    fields = doc.response_fields if doc is not None and doc.response_fields else (("result", "string"),)
    value: dict[str, object] = {}
    for name, kind in fields:
        if kind in ("integer", "int"):
            value[name] = rng.randint(0, 999)
        elif kind in ("float", "number"):
            value[name] = round(rng.uniform(0.0, 1000.0), 2)
        elif kind in ("boolean", "bool"):
            value[name] = rng.random() < 0.5
        elif kind in ("array", "list", "tuple"):
            value[name] = []
        elif kind == "dict":
            value[name] = {}
        else:
            value[name] = ""
    room = max(1, tokens - count_tokens(json.dumps(value)))
    target = next((name for name, kind in fields if kind == "string"), None)
    if target is not None:
        value[target] = prose(rng, room)
    else:
        target = next((name for name, kind in fields if kind in ("array", "list", "tuple")), "details")
        value[target] = prose(rng, room).split(". ")
    return json.dumps(value)


def generate_program(
    rng: random.Random, params: Params, program_id: str, quantile: float | None = None
) -> ProgramSpec:
    """One BFCL entry replayed as a ReAct chain; ``quantile`` picks the entry among the size-sorted ones."""
    model = _model(params)
    content, delays = program_rngs(rng)
    q = content.random() if quantile is None else quantile
    prepared = model.entries[min(int(q * len(model.entries)), len(model.entries) - 1)]
    entry = prepared.entry
    messages = [Message("system", prepared.system)]
    history = [0]
    calls: list[CallSpec] = []
    stuck_turns = 0
    after_tool = False
    for t, truth in enumerate(entry.ground_truth):
        if len(calls) == params.max_calls:
            break
        messages.append(Message("user", prepared.user_turns[t]))
        history.append(len(messages) - 1)
        stuck = len(truth) + 1 < params.step_limit and content.random() < model.stuck_prob
        stuck_turns += stuck
        steps = list(truth)
        if stuck:
            steps += [_repeat_call(entry, t)] * (params.step_limit - len(truth))
        for s in range(len(steps) + (0 if stuck else 1)):
            if len(calls) == params.max_calls:
                break
            is_call = s < len(steps)
            if is_call:
                reply = f"[{steps[s]}]"
            else:
                reply = prose(content, lognormal_tokens(content, model.answer_tokens_mean, params.answer_cv))
            messages.append(Message("assistant", reply))
            index = len(calls)
            calls.append(
                CallSpec(
                    index=index,
                    prompt=tuple(history),
                    output_tokens=max(1, count_tokens(reply)),
                    parents=(index - 1,) if index else (),
                    tool_delay=params.tool_time.sample(delays) if after_tool else 0.0,
                    reply=len(messages) - 1,
                )
            )
            history.append(len(messages) - 1)
            after_tool = is_call
            if is_call:
                size = lognormal_tokens(content, model.result_tokens_mean, params.tool_result_cv, high=8192)
                if s < len(truth):
                    result = _tool_result(content, prepared.docs.get(steps[s].split("(")[0].strip()), size)
                else:
                    result = json.dumps({"error": prose(content, max(1, size - 4))})
                messages.append(Message("user", result))
                history.append(len(messages) - 1)
    metadata = {
        "entry_id": entry.entry_id,
        "category": entry.category,
        "classes": ",".join(entry.classes),
        "stuck_turns": stuck_turns,
    }
    return ProgramSpec(program_id, NAME, 0.0, tuple(messages), tuple(calls), metadata)


WORKLOAD: WorkloadDef[Params] = WorkloadDef(
    name=NAME,
    params_type=Params,
    generate_program=generate_program,
    description="BFCL multi-turn function calling replayed as ReAct chains (real schemas and calls)",
)
