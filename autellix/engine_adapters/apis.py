"""What differs between the generation APIs the sidecar queues (pure code; vLLM 0.32's shapes).

The sidecar schedules ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses`` and
``/v1/messages`` alike; per API only this differs:

1. The body rewrite: ``priority`` where the engine's API takes it (chat, completions, Responses; vLLM's
   Messages request has no such field and would drop it, so it is not sent), and
   ``stream_options.include_usage`` for chat and completion streams (Responses and Messages streams
   carry usage anyway: ``response.completed``, ``message_delta``).
2. Usage, in each API's words, read into the chat shape the engine adapters read (so an adapter's
   extras, vLLM's per-request ``metrics.queue_time_ms``, apply to every API): Responses
   ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``; Messages ``input_tokens
   + cache_read_input_tokens + cache_creation_input_tokens`` as the prompt (Anthropic counts cache
   reads apart from ``input_tokens``), ``cache_read_input_tokens`` as cached, ``output_tokens``.
3. The stream's dialect for sse.py: which event ends it (chat and completions ``data: [DONE]``;
   Responses ``response.completed``, ``response.failed``, ``response.incomplete`` or ``error``;
   Messages ``message_stop`` or ``error``), which reports an error, which carries content (the
   output-token fallback), where usage is, and whether a usage-only chunk the client did not ask for
   is dropped (chat and completions only).
4. The error shape (autellix/api_errors.py ``error_shape_of``): Anthropic's on the Messages routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autellix.api_errors import ErrorShape

_DONE = b"[DONE]"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _chat_shape(prompt: int, cached: int, output: int, metrics: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output}
    usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"usage": usage, "metrics": metrics}


def responses_usage(response: Mapping[str, Any]) -> dict[str, Any] | None:
    """Rule 2 for a Responses ``response`` object."""
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return _chat_shape(
        _count(usage.get("input_tokens")), cached, _count(usage.get("output_tokens")), response.get("metrics")
    )


def messages_usage(usage: Any) -> dict[str, Any] | None:
    """Rule 2 for a Messages ``usage`` object."""
    if not isinstance(usage, Mapping):
        return None
    cached = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cached + _count(usage.get("cache_creation_input_tokens"))
    return _chat_shape(prompt, cached, _count(usage.get("output_tokens")), None)


@dataclass(frozen=True, slots=True)
class StreamDialect:
    """Rule 3 for one API; ``name`` is an event's ``event:`` line (None: it has none)."""

    api: str
    strips_usage_chunks: bool = False

    def is_end(self, name: bytes | None, data: bytes) -> bool:
        if self.api in ("chat", "completion"):
            return data.strip() == _DONE
        if self.api == "responses":
            return name in (b"response.completed", b"response.failed", b"response.incomplete", b"error")
        return name in (b"message_stop", b"error")

    def may_matter(self, name: bytes | None, data: bytes) -> bool:
        """Whether the event is worth decoding (the per-token hot path decodes nothing)."""
        if self.api in ("chat", "completion"):
            return b'"usage"' in data or b'"error"' in data
        if self.api == "responses":
            return name in (b"response.completed", b"response.failed", b"response.incomplete", b"error")
        return name in (b"message_start", b"message_delta", b"error")

    def is_content(self, name: bytes | None, data: bytes) -> bool:
        if self.api in ("chat", "completion"):
            return b'"choices"' in data
        if self.api == "responses":
            return name == b"response.output_text.delta"
        return name == b"content_block_delta"

    def is_error(self, name: bytes | None, payload: Mapping[str, Any]) -> bool:
        if self.api in ("chat", "completion"):
            return "error" in payload and "choices" not in payload
        if self.api == "responses":
            return name in (b"error", b"response.failed")
        return name == b"error"

    def usage(self, name: bytes | None, payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The event's usage in the chat shape (the payload itself for chat), None without any."""
        if self.api in ("chat", "completion"):
            return payload
        if self.api == "responses":
            response = payload.get("response")
            return responses_usage(response) if isinstance(response, Mapping) else None
        if name == b"message_start":
            message = payload.get("message")
            return messages_usage(message.get("usage")) if isinstance(message, Mapping) else None
        return messages_usage(payload.get("usage"))


@dataclass(frozen=True, slots=True)
class ApiRules:
    name: str
    path: str
    error_shape: ErrorShape
    sends_priority: bool  # rule 1
    stream_usage_option: bool  # rule 1: stream_options.include_usage
    dialect: StreamDialect

    def whole_usage(self, payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Rule 2 for a whole reply."""
        if self.name == "responses":
            return responses_usage(payload)
        if self.name == "messages":
            return messages_usage(payload.get("usage"))
        return payload


CHAT = ApiRules("chat", "/v1/chat/completions", "openai", True, True, StreamDialect("chat", True))
COMPLETION = ApiRules(
    "completion", "/v1/completions", "openai", True, True, StreamDialect("completion", True)
)
RESPONSES = ApiRules("responses", "/v1/responses", "openai", True, False, StreamDialect("responses"))
MESSAGES = ApiRules("messages", "/v1/messages", "anthropic", False, False, StreamDialect("messages"))
BY_PATH = {rules.path: rules for rules in (CHAT, COMPLETION, RESPONSES, MESSAGES)}
