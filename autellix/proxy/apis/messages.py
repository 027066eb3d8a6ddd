"""``POST /v1/messages``: Anthropic's Messages API (served by vLLM 0.32); errors in Anthropic's shape.

Body rules, on top of base.py's (every 400 here goes out as ``{"type": "error", "error": {...}}``):

1. ``messages`` is required: a non-empty list of objects, each with a string ``role`` and a
   ``content`` that is a string or a list of content blocks (objects).
2. ``max_tokens`` is required, an integer (Anthropic's rule, and vLLM's).
3. Typed when present: ``model`` a string, ``stream`` a boolean, ``system`` a string or a list of
   blocks, ``metadata`` an object whose ``user_id`` is a string.
4. Tokens: the text of ``system`` and of every message (string content, blocks' ``text``, tool
   results' text) at four characters a token, plus tokens.py's share per message; the routing prefix
   is the same text, in order.
5. Program identity the API carries (identity.py rule 1e): ``metadata.user_id`` (Claude Code puts its
   session in it), after the session headers coding agents send.

A stream is named events (``message_start``, ``content_block_*``, ``message_delta``) ended by
``event: message_stop`` (or an ``error`` event), with no ``[DONE]``; one that breaks off ends with an
``error`` event in Anthropic's shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from autellix.api_errors import anthropic_body, bad_request

from ..tokens import PER_MESSAGE_TOKENS, text_tokens
from .base import Api, CallBody, load_object, text_prefix, typed, without_priority

END_LINE = re.compile(rb"\nevent: ?(?:message_stop|error)")


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, Mapping):
                continue
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.extend(_block_texts(block.get("content")))
    return out


def _check_messages(messages: Any) -> list[Any]:
    """Rule 1."""
    if messages is None:
        raise bad_request("'messages' is required", param="messages", code="missing_field")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", param="messages", code="invalid_type")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise bad_request(f"'{where}' must be an object with a string 'role'", param="messages",
                              code="invalid_type")  # fmt: skip
        content = message.get("content")
        if not isinstance(content, str) and not (
            isinstance(content, list) and all(isinstance(block, Mapping) for block in content)
        ):
            raise bad_request(f"'{where}.content' must be a string or a list of content blocks",
                              param="messages", code="invalid_type")  # fmt: skip
    return messages


def parse(raw: bytes) -> CallBody:
    data = load_object(raw)
    model = typed(data, "model", str, "a string")
    stream = typed(data, "stream", bool, "a boolean")
    metadata = typed(data, "metadata", dict, "an object")
    system = typed(data, "system", (str, list), "a string or a list of content blocks")
    if data.get("max_tokens") is None:
        raise bad_request("'max_tokens' is required", param="max_tokens", code="missing_field")
    typed(data, "max_tokens", int, "an integer")
    messages = _check_messages(data.get("messages"))
    user = metadata.get("user_id") if metadata is not None else None
    if user is not None and not isinstance(user, str):
        raise bad_request(
            "'metadata.user_id' must be a string", param="metadata.user_id", code="invalid_type"
        )
    texts = _block_texts(system) if system is not None else []
    for message in messages:
        texts.extend(_block_texts(message.get("content")))
    tokens = text_tokens(sum(map(len, texts))) + PER_MESSAGE_TOKENS * (len(messages) + bool(system))
    return CallBody(
        "messages",
        model,
        bool(stream),
        tokens,
        metadata,
        text_prefix(texts),
        program_hint=("body:metadata.user_id", user) if user else None,
        upstream=without_priority(data),
    )


def stream_error(message: str) -> bytes:
    """The end of a stream that broke off: Anthropic's ``error`` event."""
    return f"event: error\ndata: {json.dumps(anthropic_body(502, message))}\n\n".encode()


MESSAGES = Api(
    name="messages",
    path="/v1/messages",
    error_shape="anthropic",
    parse=parse,
    stream_end=END_LINE,
    stream_marker=b"event:",
    stream_error=stream_error,
)
