"""What the sidecar measures for a call and reports to the proxy (pure code; DESIGN.md §3).

Theory of operation: service accounting (reference.md §1: service is engine execution *time*)
-------------------------------------------------------------------------------------------
Four instants of the sidecar's monotonic clock matter: *arrival* (the call entered our queue),
*admission* (we sent it to the engine), *completion* (the engine's last byte of the call arrived: the
end of a non-streamed body, or the stream's ``[DONE]``/end) and, where the engine reports it, the
engine's own queue time ``q_e`` (vLLM's per-request ``metrics.queue_time_ms`` when it runs with
``--enable-per-request-metrics``).

1. ``queue_wait = (admission - arrival) + q_e``: time in our queue (the queue's never-reset total, so a
   beta promotion does not erase it) plus time in the engine's queue.
2. ``exec_time = (completion - admission) - q_e``: the time the engine worked on the call. Without an
   engine-reported ``q_e`` it is the whole admission-to-completion span; the admission window keeps the
   engine's internal queue within a small slack, so the error is at most a few steps.
3. ``q_e`` is clipped to ``[0, completion - admission]``, so neither figure is ever negative.
4. An aborted or failed call (``ok = False``) still reports the time it held the engine: PLAS and
   ATLAS charge service for the engine time a program consumed, finished or not.
5. Token counts come from the engine's ``usage`` (``prompt_tokens``, ``completion_tokens``,
   ``prompt_tokens_details.cached_tokens``); for a stream whose usage never came, output tokens fall
   back to the number of content chunks (vLLM and SGLang stream about one token per chunk).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from autellix.engine_adapters.protocol import CompletionReport


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts (and engine-side timing) the engine reported for one call."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    engine_queue_time: float | None = None  # seconds; None where the engine does not report it


def compute_report(
    call_id: str,
    *,
    our_queue_wait: float,
    admitted_at: float,
    completed_at: float,
    usage: Usage | None,
    ok: bool,
    fallback_output_tokens: int = 0,
    resident: float | None = None,
) -> CompletionReport:
    """The completion report of one call (rules 1-5 of the module docstring)."""
    span = max(0.0, completed_at - admitted_at) if math.isfinite(completed_at - admitted_at) else 0.0
    wait = our_queue_wait if math.isfinite(our_queue_wait) and our_queue_wait > 0 else 0.0
    engine_queue = 0.0
    if usage is not None and usage.engine_queue_time is not None and math.isfinite(usage.engine_queue_time):
        engine_queue = min(max(usage.engine_queue_time, 0.0), span)
    output = usage.output_tokens if usage is not None else fallback_output_tokens
    return CompletionReport(
        call_id=call_id,
        queue_wait=wait + engine_queue,
        exec_time=span - engine_queue,
        prompt_tokens=usage.prompt_tokens if usage is not None else 0,
        cached_tokens=usage.cached_tokens if usage is not None else 0,
        output_tokens=output,
        ok=ok,
        resident=resident,
    )


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def usage_from_payload(payload: Mapping[str, object]) -> Usage | None:
    """The OpenAI-style ``usage`` object of a response or stream chunk, None if it has none."""
    usage = payload.get("usage")
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        cached_tokens=cached,
        output_tokens=_count(usage.get("completion_tokens")),
    )


def requested_output_tokens(body: Mapping[str, object]) -> int | None:
    """The output the client allows (``max_completion_tokens``, then ``max_tokens``); None if unset."""
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers


def _content_chars(content: object) -> int:
    """A message's or input item's text: a string, or a list of parts (``{"text": ...}``) or strings."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    chars = 0
    for part in content:
        if isinstance(part, str):
            chars += len(part)
        elif isinstance(part, Mapping):
            text = part.get("text")
            chars += len(text) if isinstance(text, str) else _content_chars(part.get("content"))
    return chars


def estimate_input_tokens(body: Mapping[str, object]) -> int:
    """A cheap prompt-length estimate when the proxy sent none: characters / 4, token ids counted.

    Chat and Messages ``messages`` (and Messages' ``system``), Responses ``input`` and ``instructions``
    (a chained call's stored history is the engine's, not in the body: the proxy's estimate counts it
    no better), completions ``prompt``."""
    chars = _content_chars(body.get("system")) + _content_chars(body.get("instructions"))
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            chars += _content_chars(message.get("content")) if isinstance(message, Mapping) else 0
    items = body.get("input")
    if isinstance(items, str):
        chars += len(items)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping):
                chars += _content_chars(item.get("content"))
                chars += sum(len(v) for k in ("output", "arguments") if isinstance(v := item.get(k), str))
            elif isinstance(item, str):
                chars += len(item)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):
        for item in prompt:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int):
                tokens += 1
            elif isinstance(item, list):
                tokens += len(item)
    return max(1, tokens + math.ceil(chars / CHARS_PER_TOKEN))
