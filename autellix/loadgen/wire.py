"""What a live call looks like in each generation API the load generator can speak (pure: no IO).

``--api chat`` (``/v1/chat/completions``, the default), ``responses`` (``/v1/responses``) or ``messages``
(``/v1/messages``): the same call of a program (its messages, a forced output length: ``ignore_eos``
with the API's own limit field) in each API's words, and each API's stream read back into the same
three things: content (a chunk of generated text), usage (prompt, cached and output tokens) and the
end. Responses calls are sent with ``store: false``: the workload's prompts carry their history, as in
chat, so nothing needs to be stored; Messages calls carry the system turns in ``system``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Api = Literal["chat", "responses", "messages"]
PATHS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Event:
    """One stream event as the runner needs it."""

    text: str = ""  # generated text it carries
    usage: Usage | None = None
    end: bool = False  # the stream's last event
    error: str | None = None


def body(api: Api, model: str, messages: Sequence[Mapping[str, str]], output_tokens: int) -> dict[str, Any]:
    """A streamed call that generates exactly ``output_tokens`` tokens."""
    if api == "chat":
        return {
            "model": model,
            "messages": list(messages),
            "max_tokens": output_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    if api == "responses":
        return {
            "model": model,
            "input": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_output_tokens": output_tokens,
            "ignore_eos": True,
            "stream": True,
            "store": False,
        }
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
    out: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": output_tokens, "ignore_eos": True}
    if system:
        out["system"] = system
    out["stream"] = True
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read(api: Api, data: bytes) -> Event:
    """One ``data:`` payload of the API's stream (raises ValueError on JSON that does not decode)."""
    if api == "chat":
        if data == b"[DONE]":
            return Event(end=True)
        event = json.loads(data)
        if "error" in event:
            return Event(error=json.dumps(event["error"])[:300])
        usage = event.get("usage")
        counted = None
        if isinstance(usage, Mapping):
            details = usage.get("prompt_tokens_details") or {}
            counted = Usage(_count(usage.get("prompt_tokens")), _count(details.get("cached_tokens")),
                            _count(usage.get("completion_tokens")))  # fmt: skip
        choices = event.get("choices")
        text = (choices[0].get("delta") or {}).get("content") or "" if choices else ""
        return Event(text=text, usage=counted)
    event = json.loads(data)
    kind = event.get("type")
    if kind == "error" or kind == "response.failed":
        return Event(error=json.dumps(event.get("error") or event)[:300], end=True)
    if api == "responses":
        if kind == "response.output_text.delta":
            return Event(text=str(event.get("delta") or ""))
        if kind in ("response.completed", "response.incomplete"):
            usage = (event.get("response") or {}).get("usage") or {}
            details = usage.get("input_tokens_details") or {}
            counted = Usage(_count(usage.get("input_tokens")), _count(details.get("cached_tokens")),
                            _count(usage.get("output_tokens")))  # fmt: skip
            return Event(usage=counted, end=True)
        return Event()
    if kind == "content_block_delta":
        return Event(text=str((event.get("delta") or {}).get("text") or ""))
    if kind == "message_delta":
        usage = event.get("usage") or {}
        cached = _count(usage.get("cache_read_input_tokens"))
        prompt = _count(usage.get("input_tokens")) + cached + _count(usage.get("cache_creation_input_tokens"))
        return Event(usage=Usage(prompt, cached, _count(usage.get("output_tokens"))))
    if kind == "message_stop":
        return Event(end=True)
    return Event()
