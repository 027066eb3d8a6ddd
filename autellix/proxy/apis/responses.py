"""``POST /v1/responses``: OpenAI's Responses API (served by vLLM 0.32), and the ids of stored replies.

Body rules, on top of base.py's:

1. ``input`` is required: a string, or a list of input items (objects).
2. Typed when present: ``model``, ``instructions``, ``previous_response_id`` strings; ``stream``,
   ``store``, ``background`` booleans; ``max_output_tokens`` an integer; ``metadata`` an object;
   ``conversation`` a string or an object with a string ``id``.
3. Tokens: the text of ``instructions`` and of every input item (a message's string content or the
   ``text`` of its parts, a tool output, a call's arguments) at four characters a token, plus
   tokens.py's share per item; the routing prefix is the same text, in order.
4. Program identity the API carries (identity.py rule 1e): ``conversation`` names the program; a call
   with ``previous_response_id`` continues the program (and must go to the engine) of that response
   (calls.py rule 9). A reply that the engine may store (``store`` is not false) may be continued, so
   a program the proxy names for such a call is kept after the call, until it expires.

A stream is a sequence of named events (``event: response.created`` ... ``event: response.completed``),
with no ``[DONE]``: it ends with ``response.completed``, ``response.failed``, ``response.incomplete``
or an ``error`` event. One that breaks off ends with an ``error`` event. The stored reply's id is the
``id`` of a whole reply, or of the ``response`` in a stream's ``response.created`` event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from autellix.api_errors import bad_request

from ..tokens import PER_MESSAGE_TOKENS, text_tokens
from .base import Api, CallBody, load_object, text_prefix, typed, without_priority

END_LINE = re.compile(rb"\nevent: ?(?:response\.(?:completed|failed|incomplete)|error)")
_EVENT_END = re.compile(rb"\r?\n\r?\n")
MAX_ID_SEARCH = 256 * 1024  # bytes of a stream searched for the response.created event


def _texts(item: Any) -> list[str]:
    """Rule 3 for one input item."""
    if isinstance(item, str):
        return [item]
    if not isinstance(item, Mapping):
        return []
    out: list[str] = []
    content = item.get("content")
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        out.extend(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    for key in ("output", "arguments"):
        if isinstance(item.get(key), str):
            out.append(item[key])
    return out


def _conversation(data: Mapping[str, Any]) -> str | None:
    value = data.get("conversation")
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise bad_request(
            "'conversation' must be a string or an object with a string 'id'",
            param="conversation",
            code="invalid_type",
        )
    return value


def parse(raw: bytes) -> CallBody:
    data = load_object(raw)
    model = typed(data, "model", str, "a string")
    stream = typed(data, "stream", bool, "a boolean")
    store = typed(data, "store", bool, "a boolean")
    typed(data, "background", bool, "a boolean")
    typed(data, "max_output_tokens", int, "an integer")
    metadata = typed(data, "metadata", dict, "an object")
    instructions = typed(data, "instructions", str, "a string")
    chain = typed(data, "previous_response_id", str, "a string")
    conversation = _conversation(data)
    items = data.get("input")
    if items is None:
        raise bad_request("'input' is required", param="input", code="missing_field")
    if isinstance(items, str):
        items = [items]
    elif not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise bad_request(
            "'input' must be a string or a list of input items", param="input", code="invalid_type"
        )
    texts = [instructions] if instructions else []
    for item in items:
        texts.extend(_texts(item))
    tokens = text_tokens(sum(map(len, texts))) + PER_MESSAGE_TOKENS * (len(items) + bool(instructions))
    return CallBody(
        "responses",
        model,
        bool(stream),
        tokens,
        metadata,
        text_prefix(texts),
        program_hint=("body:conversation", conversation) if conversation else None,
        chain=chain or None,
        keeps_program=store is not False,
        upstream=without_priority(data),
    )


def reply_id(data: bytes) -> str | None:
    """The id of a whole stored reply (``{"object": "response", "id": ...}``), None if it is not one."""
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("object") != "response":
        return None
    rid = payload.get("id")
    return rid if isinstance(rid, str) else None


class CreatedEventId:
    """The stream's ``response.created`` event's response id (base.py :class:`~.base.ReplyIds`)."""

    __slots__ = ("_buffer", "_done")

    def __init__(self) -> None:
        self._buffer = b""
        self._done = False

    def feed(self, segment: bytes) -> str | None:
        if self._done:
            return None
        self._buffer += segment
        start = 0
        while (end := _EVENT_END.search(self._buffer, start)) is not None:
            event, start = self._buffer[start : end.start()], end.end()
            found = _created_id(event)
            if found is not None:
                self._done, self._buffer = True, b""
                return found
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_ID_SEARCH:  # no such event where it should be: stop looking
            self._done, self._buffer = True, b""
        return None


def _created_id(event: bytes) -> str | None:
    data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    if b"response.created" not in data:
        return None
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    response = payload.get("response") if isinstance(payload, dict) else None
    if payload.get("type") == "response.created" and isinstance(response, dict):
        rid = response.get("id")
        return rid if isinstance(rid, str) else None
    return None


def stream_error(message: str) -> bytes:
    """The end of a stream that broke off: an ``error`` event, as the Responses API words one."""
    event: dict[str, object] = {"type": "error", "code": "upstream_error", "message": message}
    event.update(param=None, sequence_number=0)
    return f"event: error\ndata: {json.dumps(event)}\n\n".encode()


RESPONSES = Api(
    name="responses",
    path="/v1/responses",
    error_shape="openai",
    parse=parse,
    stream_end=END_LINE,
    stream_marker=b"event:",
    stream_error=stream_error,
    reply_id=reply_id,
    stream_ids=CreatedEventId,
)
