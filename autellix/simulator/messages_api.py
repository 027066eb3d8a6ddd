"""The simulated engine's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) in vLLM 0.32's
shapes (pure: no IO).

As vLLM serves it (it turns the request into a chat request; checked by tests/real_vllm/test_parity.py):

1. Request: ``model`` and ``messages`` (role ``user``/``assistant``, content a string or blocks whose
   ``text`` counts) and ``max_tokens`` are required, ``system`` a string or blocks; ``stream``,
   ``metadata``, ``ignore_eos``, ``stop_sequences`` ...; unknown fields ignored, and so is
   ``priority`` (vLLM's Messages request has no such field).
2. Errors: a body that fails validation is answered as any vLLM validation error, in OpenAI's shape
   (``{"error": {... "type": "Bad Request", "code": 400}}``); an error of the handler (unknown model,
   too many tokens) in Anthropic's: ``{"type": "error", "error": {"type": "NotFoundError", ...}}``.
3. Reply: ``type: "message"``, one ``text`` block, ``stop_reason`` ``max_tokens`` or ``end_turn``, and
   usage as Anthropic counts it: ``input_tokens`` = prompt minus cached, ``cache_read_input_tokens``
   (cached), ``cache_creation_input_tokens`` 0.
4. Stream: ``message_start`` (usage: input tokens, 0 output), ``content_block_start``,
   ``content_block_delta`` per engine step, ``content_block_stop``, ``message_delta`` (stop reason,
   full usage), ``message_stop``; no ``[DONE]``.
5. ``count_tokens``: ``{"input_tokens": n, "context_management": {"original_input_tokens": n}}``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from autellix.simulator.openai_api import ApiError


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = False
    metadata: dict[str, Any] | None = None
    ignore_eos: bool = False

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("max_tokens must be positive")
        return value


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
    return ""


def chat_messages(request: MessagesRequest | CountTokensRequest) -> list[dict[str, str]]:
    """Rule 1: the conversation as chat turns (the system prompt first)."""
    turns = [{"role": "system", "content": _text(request.system)}] if request.system else []
    for message in request.messages:
        turns.append({"role": str(message.get("role", "user")), "content": _text(message.get("content"))})
    return turns


def anthropic_error(error: ApiError) -> dict[str, Any]:
    """Rule 2 for a handler's error: Anthropic's envelope, vLLM's type name."""
    return {"type": "error", "error": {"type": error.error_type, "message": error.message}}


def usage(prompt_tokens: int, output_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """Rule 3."""
    return {
        "input_tokens": max(0, prompt_tokens - cached_tokens),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
    }


def stop_reason(finish_reason: str) -> str:
    return "max_tokens" if finish_reason == "length" else "end_turn"


def message_object(
    message_id: str, model: str, text: str, finish_reason: str, used: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": model,
        "stop_reason": stop_reason(finish_reason),
        "usage": used,
    }


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload}, separators=(',', ':'))}\n\n".encode()


def stream_opening(message_id: str, model: str, prompt_tokens: int) -> bytes:
    """Rule 4's first two events."""
    message: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "content": []}
    message.update(model=model, stop_reason=None, stop_sequence=None)
    message["usage"] = {"input_tokens": prompt_tokens, "output_tokens": 0}
    return _event("message_start", {"message": message}) + _event(
        "content_block_start", {"content_block": {"type": "text", "text": ""}, "index": 0}
    )


def stream_delta(text: str) -> bytes:
    return _event("content_block_delta", {"delta": {"type": "text_delta", "text": text}, "index": 0})


def stream_closing(finish_reason: str, used: dict[str, Any]) -> bytes:
    delta = {"stop_reason": stop_reason(finish_reason), "stop_sequence": None}
    return (
        _event("content_block_stop", {"index": 0})
        + _event("message_delta", {"delta": delta, "usage": used})
        + _event("message_stop", {})
    )


def count_tokens_response(tokens: int) -> dict[str, Any]:
    """Rule 5."""
    return {"input_tokens": tokens, "context_management": {"original_input_tokens": tokens}}
