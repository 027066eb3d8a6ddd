"""Statistics of generated programs and the paper's figures they are held to (reference.md §2).

Per-call figures are pooled over every call of every program (total tokens / total calls), which is
how the paper's "tokens per call" reads. Token counts use the project's tokenizer exactly:

- ``prompt_tokens``: the whole prompt of a call, chat template included (``call_prompt_tokens``);
  identical prompts inside a program (LATS's parallel samples) are encoded once.
- ``new_tokens``: the input a call adds besides its parents' prompts and recorded replies
  (``call_new_tokens``); each distinct message is encoded once.

Which of the two the paper's "prefill tokens per call" means differs by workload (each workload's
docstring argues its case); ``PAPER_TARGETS`` records the choice in ``prefill_metric``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from autellix.loadgen.program import (
    Message,
    ProgramSpec,
    call_prompt_tokens,
    message_tokens,
    new_message_indexes,
)

__all__ = ["PAPER_TARGETS", "PaperTarget", "WorkloadStats", "measure"]


@dataclass(frozen=True, slots=True)
class PaperTarget:
    calls_mean: float
    calls_max: int  # the largest program the paper reports (approximate for LATS)
    prefill_tokens_mean: float
    prefill_metric: str  # "new_tokens" or "prompt_tokens": which WorkloadStats field it compares to
    output_tokens_mean: float
    kind: str  # "chain" or "dag"


PAPER_TARGETS: Mapping[str, PaperTarget] = MappingProxyType(
    {
        "sharegpt": PaperTarget(6.66, 80, 256.0, "new_tokens", 277.0, "chain"),
        "bfcl": PaperTarget(10.75, 70, 735.0, "new_tokens", 34.0, "chain"),
        "lats": PaperTarget(159.7, 400, 467.0, "prompt_tokens", 73.0, "dag"),
    }
)


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    programs: int
    calls: int
    calls_mean: float  # calls per program
    calls_max: int
    output_tokens_mean: float  # per call
    prompt_tokens_mean: float | None  # per call; None when not measured
    new_tokens_mean: float | None  # per call; None when not measured
    chain_fraction: float  # share of programs that are chains
    critical_path_mean: float  # calls on the longest dependency path, per program
    max_parallelism_mean: float  # widest fan-out, per program

    def prefill_tokens_mean(self, metric: str) -> float | None:
        """The figure named by ``PaperTarget.prefill_metric``."""
        if metric == "new_tokens":
            return self.new_tokens_mean
        if metric == "prompt_tokens":
            return self.prompt_tokens_mean
        raise ValueError(f"unknown prefill metric {metric!r}")


def measure(
    programs: Iterable[ProgramSpec], prompt_tokens: bool = True, new_tokens: bool = True
) -> WorkloadStats:
    """Figures of ``programs``. Whole prompts of long chains are costly to encode: skip with False."""
    items = list(programs)
    if not items:
        raise ValueError("no programs to measure")
    message_cache: dict[Message, int] = {}
    calls = prompt_total = new_total = output_total = 0
    for program in items:
        prompt_cache: dict[tuple[int, ...], int] = {}
        for call in program.calls:
            calls += 1
            output_total += call.output_tokens
            if prompt_tokens:
                if call.prompt not in prompt_cache:
                    prompt_cache[call.prompt] = call_prompt_tokens(program, call)
                prompt_total += prompt_cache[call.prompt]
            if new_tokens:
                for index in new_message_indexes(program, call):
                    message = program.messages[index]
                    if message not in message_cache:
                        message_cache[message] = message_tokens(message)
                    new_total += message_cache[message]
    n = len(items)
    return WorkloadStats(
        programs=n,
        calls=calls,
        calls_mean=calls / n,
        calls_max=max(p.num_calls for p in items),
        output_tokens_mean=output_total / calls,
        prompt_tokens_mean=prompt_total / calls if prompt_tokens else None,
        new_tokens_mean=new_total / calls if new_tokens else None,
        chain_fraction=sum(p.is_chain for p in items) / n,
        critical_path_mean=sum(p.critical_path_calls() for p in items) / n,
        max_parallelism_mean=sum(p.max_parallelism() for p in items) / n,
    )
