"""Agentic programs as DAGs of LLM calls: the data model every workload, trace and runner shares.

The paper schedules *programs* (arXiv 2502.13965 §2, §4; reference.md §1-§2): a chat session, a ReAct
tool loop or a tree search is one program whose calls depend on one another. This module holds the
plain, immutable description of such a program; the runners (live HTTP, discrete-event simulation)
decide when calls are issued, this module only says what they are.

Theory of operation
-------------------
1. A program is a non-empty tuple of calls. Call ``i`` waits for its ``parents``, which are indexes
   *smaller* than ``i``, so the tuple order is a topological order and every program is a DAG by
   construction. Calls without parents are roots; they may start when the program arrives.
2. A call's input is a chat. To keep traces compact a program owns a pool of messages
   (``ProgramSpec.messages``) and a call's ``prompt`` is a tuple of indexes into that pool; the
   history a chain's calls share is therefore stored once. In memory, texts shared between programs
   (system prompts, tool schemas) are the same ``str`` object; the trace writer stores them once per
   file (see ``trace.py``).
3. Replay, not live feedback: a call's ``reply`` is the pool message that holds the answer *recorded
   in the data*, and later calls put that recorded answer in their history. The live text the engine
   generates is discarded, so a program is identical under every policy and the results compare
   like with like (the paper replays its traces the same way). Consequence: a chain's call ``j``
   shares with call ``j-1`` exactly the prefix ``prompt(j-1)``; the recorded answer and the new user
   turn are fresh input.
4. ``output_tokens`` is the forced output length: runners send ``max_tokens`` with ``ignore_eos``.
5. ``tool_delay`` is the time between the moment all parents have finished (for a root: the
   program's arrival) and the moment the call is issued: tool execution or user think time.
6. A program whose calls form one sequence (call ``i`` has exactly parent ``i-1``) is a *chain*,
   single-threaded, scheduled by PLAS; anything else is a *DAG*, multi-threaded, scheduled by ATLAS.
   ``thread`` tells a call's thread id to the proxy (``X-Thread-Id``); chains use thread 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autellix.simulator.tokenizer import apply_chat_template, encode

__all__ = [
    "ROLES",
    "CallSpec",
    "Message",
    "ProgramSpec",
    "call_messages",
    "call_new_tokens",
    "call_prompt_tokens",
    "message_tokens",
    "new_message_indexes",
]

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a program's pool."""

    role: str  # "system", "user" or "assistant"; tool results travel as "user" messages
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {sorted(ROLES)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError("message content must be a string")


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of a program."""

    index: int  # position in ProgramSpec.calls
    prompt: tuple[int, ...]  # indexes into ProgramSpec.messages, in chat order
    output_tokens: int  # forced output length (max_tokens with ignore_eos)
    parents: tuple[int, ...] = ()  # calls that must finish first; all smaller than index, ascending
    thread: int = 0  # thread id within the program (sent as X-Thread-Id)
    tool_delay: float = 0.0  # seconds between the parents finishing and the call being issued
    reply: int | None = None  # pool index of the recorded answer later calls use as history

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"call index must be >= 0, got {self.index}")
        if not self.prompt:
            raise ValueError(f"call {self.index}: prompt must hold at least one message")
        if self.output_tokens < 1:
            raise ValueError(f"call {self.index}: output_tokens must be >= 1, got {self.output_tokens}")
        if any(p < 0 or p >= self.index for p in self.parents):
            raise ValueError(f"call {self.index}: parents must be earlier calls, got {list(self.parents)}")
        if any(a >= b for a, b in zip(self.parents, self.parents[1:], strict=False)):
            raise ValueError(f"call {self.index}: parents must be ascending and distinct")
        if self.thread < 0:
            raise ValueError(f"call {self.index}: thread must be >= 0, got {self.thread}")
        if not (math.isfinite(self.tool_delay) and self.tool_delay >= 0.0):
            raise ValueError(f"call {self.index}: tool_delay must be a finite number >= 0")


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """A program: its identity, arrival time, message pool and calls (a DAG in topological order)."""

    program_id: str
    workload: str  # name of the workload that generated it ("sharegpt", "bfcl", "lats", ...)
    arrival_time: float  # seconds from the start of the run
    messages: tuple[Message, ...]  # the pool that CallSpec.prompt and CallSpec.reply index
    calls: tuple[CallSpec, ...]
    metadata: Mapping[str, object] = field(default_factory=dict, hash=False)  # JSON-native values, read-only

    def __post_init__(self) -> None:
        if not self.program_id:
            raise ValueError("program_id must not be empty")
        if not (math.isfinite(self.arrival_time) and self.arrival_time >= 0.0):
            raise ValueError(f"{self.program_id}: arrival_time must be a finite number >= 0")
        if not self.calls:
            raise ValueError(f"{self.program_id}: a program needs at least one call")
        size = len(self.messages)
        for position, call in enumerate(self.calls):
            if call.index != position:
                raise ValueError(f"{self.program_id}: call at position {position} has index {call.index}")
            if any(m < 0 or m >= size for m in call.prompt):
                raise ValueError(f"{self.program_id}: call {position} refers to a message outside the pool")
            if call.reply is not None and not 0 <= call.reply < size:
                raise ValueError(f"{self.program_id}: call {position} reply is outside the pool")

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    @property
    def total_output_tokens(self) -> int:
        return sum(call.output_tokens for call in self.calls)

    @property
    def is_chain(self) -> bool:
        """Single-threaded: every call after the first waits for exactly the previous one (PLAS)."""
        return self.calls[0].parents == () and all(
            call.parents == (call.index - 1,) for call in self.calls[1:]
        )

    @property
    def kind(self) -> str:
        """``"chain"`` (scheduled by PLAS) or ``"dag"`` (scheduled by ATLAS)."""
        return "chain" if self.is_chain else "dag"

    def roots(self) -> tuple[int, ...]:
        """Calls with no parents: issued when the program arrives (after their tool_delay)."""
        return tuple(call.index for call in self.calls if not call.parents)

    def children(self) -> tuple[tuple[int, ...], ...]:
        """For each call, the calls that wait for it (ascending)."""
        kids: list[list[int]] = [[] for _ in self.calls]
        for call in self.calls:
            for parent in call.parents:
                kids[parent].append(call.index)
        return tuple(tuple(k) for k in kids)

    def leaves(self) -> tuple[int, ...]:
        """Calls nobody waits for: the program is done when all of them are."""
        waited = {parent for call in self.calls for parent in call.parents}
        return tuple(call.index for call in self.calls if call.index not in waited)

    def critical_path(self, cost: Callable[[CallSpec], float] | None = None) -> float:
        """Length of the longest dependency path; each call weighs ``cost(call)`` (default 1).

        With ``cost = lambda c: exec_time[c.index] + c.tool_delay`` this is the program's response
        time with infinite parallelism, the quantity ATLAS approximates.
        """
        weigh = cost if cost is not None else _unit_cost
        finish: list[float] = []
        for call in self.calls:
            start = max((finish[p] for p in call.parents), default=0.0)
            finish.append(start + weigh(call))
        return max(finish)

    def critical_path_calls(self) -> int:
        """Number of calls on the longest dependency path (the program's sequential depth)."""
        return round(self.critical_path())

    def max_parallelism(self) -> int:
        """Largest number of calls at the same depth: the widest fan-out the program can reach."""
        depth: list[int] = []
        for call in self.calls:
            depth.append(1 + max((depth[p] for p in call.parents), default=0))
        counts: dict[int, int] = {}
        for d in depth:
            counts[d] = counts.get(d, 0) + 1
        return max(counts.values())


def _unit_cost(_call: CallSpec) -> float:
    return 1.0


def call_messages(program: ProgramSpec, call: CallSpec | int) -> list[dict[str, str]]:
    """The call's chat messages as the OpenAI API takes them."""
    spec = program.calls[call] if isinstance(call, int) else call
    pool = program.messages
    return [{"role": pool[i].role, "content": pool[i].content} for i in spec.prompt]


def call_prompt_tokens(program: ProgramSpec, call: CallSpec | int) -> int:
    """Prompt length of the call in the project's tokenizer, chat template and generation header included."""
    return len(encode(apply_chat_template(call_messages(program, call))))


def message_tokens(message: Message) -> int:
    """Tokens one message adds to a chat: its content plus the template's role header and end marker."""
    rendered = apply_chat_template([{"role": message.role, "content": message.content}], False)
    return len(encode(rendered)) - 1  # minus the begin-of-text marker, which a chat carries once


def new_message_indexes(program: ProgramSpec, call: CallSpec | int) -> tuple[int, ...]:
    """Messages of the call's prompt that neither a parent's prompt nor a parent's reply contains.

    For a root call that is the whole prompt. For a chain's later call it is the new user turn (or
    tool result): the input the call adds besides the history and the previous recorded answer.
    """
    spec = program.calls[call] if isinstance(call, int) else call
    seen: set[int] = set()
    for parent in spec.parents:
        parent_call = program.calls[parent]
        seen.update(parent_call.prompt)
        if parent_call.reply is not None:
            seen.add(parent_call.reply)
    return tuple(i for i in spec.prompt if i not in seen)


def call_new_tokens(
    program: ProgramSpec, call: CallSpec | int, count: Callable[[Message], int] | None = None
) -> int:
    """Tokens of :func:`new_message_indexes` (``count`` defaults to :func:`message_tokens`)."""
    counter = count if count is not None else message_tokens
    return sum(counter(program.messages[i]) for i in new_message_indexes(program, call))
