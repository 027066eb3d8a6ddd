"""``POST /v1/chat/completions`` (and the ``data: [DONE]`` stream it shares with ``/v1/completions``).

Body rules, on top of base.py's:

1. ``messages`` is required, a non-empty list of objects each with a string ``role`` and a
   ``content`` that is a string, a list of parts, or null.
2. Typed when present: ``model`` a string, ``stream`` a boolean, ``max_tokens``,
   ``max_completion_tokens`` and ``n`` integers, ``stream_options`` and ``metadata`` objects.
3. Tokens: the messages' text at four characters a token plus the template's share per message
   (tokens.py); the routing prefix is the text of the messages' string contents.

A stream is OpenAI's: ``data: {chunk}`` events, ended by ``data: [DONE]``; one that breaks off ends
with an error chunk (``{"error": {...}}``, what vLLM sends mid-stream) and ``[DONE]``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from autellix.api_errors import bad_request, openai_body

from ..tokens import chat_tokens
from .base import Api, CallBody, load_object, text_prefix, typed, without_priority

DONE_LINE = re.compile(rb"\ndata: ?\[DONE\]")


def check_messages(messages: Any) -> list[Any]:
    """Rule 1."""
    if messages is None:
        raise bad_request("'messages' is required", param="messages", code="missing_field")
    if not isinstance(messages, list):
        raise bad_request(
            f"'messages' must be a list, got {type(messages).__name__}", param="messages", code="invalid_type"
        )
    if not messages:
        raise bad_request("'messages' must contain at least one message", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{where}' must be an object", param="messages", code="invalid_type")
        if not isinstance(message.get("role"), str):
            raise bad_request(f"'{where}.role' must be a string", param="messages", code="invalid_type")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(
                f"'{where}.content' must be a string, a list of parts or null",
                param="messages",
                code="invalid_type",
            )
    return messages


def check_sampling(data: dict[str, Any]) -> tuple[str | None, bool, dict[str, Any] | None]:
    """Rule 2: ``(model, stream, metadata)``; the other fields are only checked."""
    model = typed(data, "model", str, "a string")
    stream = typed(data, "stream", bool, "a boolean")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        typed(data, key, int, "an integer")
    typed(data, "stream_options", dict, "an object")
    metadata = typed(data, "metadata", dict, "an object")
    return model, bool(stream), metadata


def parse(raw: bytes) -> CallBody:
    data = load_object(raw)
    model, stream, metadata = check_sampling(data)
    messages = check_messages(data.get("messages"))
    texts = [m["content"] for m in messages if isinstance(m.get("content"), str)]
    return CallBody(
        "chat",
        model,
        stream,
        chat_tokens(messages),
        metadata,
        text_prefix(texts),
        upstream=without_priority(data),
    )


def done_stream_error(message: str) -> bytes:
    """The end of a ``[DONE]`` stream that broke off: an error chunk, then ``[DONE]``."""
    error = openai_body(502, message, code="upstream_error", error_type="upstream_error")
    return f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()


CHAT = Api(
    name="chat",
    path="/v1/chat/completions",
    error_shape="openai",
    parse=parse,
    stream_end=DONE_LINE,
    stream_marker=b"[DONE]",
    stream_error=done_stream_error,
)
