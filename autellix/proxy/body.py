"""What the proxy reads from a generation request's JSON body, and the 400s for bodies it cannot use.

Theory of operation
-------------------
The proxy forwards the body's bytes unchanged (an engine adapter in the sidecar may rewrite fields);
it parses them once, to route and to answer bad input before any engine sees it.

1. The body must be a JSON object (``invalid_json`` otherwise; autellix/jsonbody.py refuses bodies that
   are not UTF-8, nest deeper than 256 levels or hold integers of over 4300 digits).
2. Chat: ``messages`` is required, a non-empty list of objects each with a string ``role`` and a
   ``content`` that is a string, a list of parts, or null. Completions: ``prompt`` is required, a
   string, a list of token ids, a list of strings or a list of token-id lists.
3. Typed when present (null is accepted as "absent", as OpenAI does): ``model`` a string, ``stream``
   a boolean, ``max_tokens``/``max_completion_tokens``/``n`` integers (booleans are not integers),
   ``stream_options`` and ``metadata`` objects.
4. ``model`` is optional here as in vLLM (an engine then serves its own model); whether the fleet
   serves a named model is the app's check (404), since only it knows the backends.
5. The input-token estimate (:mod:`.tokens`) and a routing prefix (the first
   :data:`PREFIX_CHARS` characters of the prompt text, for prefix-affinity routers) come out too.
6. A client's own ``priority`` field never reaches an engine: the body is re-encoded without it
   (``CallBody.upstream``), the only case where the proxy changes the bytes. Stripped, not bounded:
   the engine's priority is how the sidecar enforces the program-level order (it sets the field from
   the call's queue level), so any client value, bounded or not, would let one caller reorder its own
   calls against everyone else's (``-100`` would jump every queue of a priority-policy engine behind a
   proxy without a sidecar, and a bound of 0..7 would still let it claim level 0 for ever). vLLM's
   own field has no meaning for a client of a shared fleet; the proxy answers nothing about it, so
   a client that sends it is served as if it had not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from autellix.jsonbody import JsonBodyError, parse_json

from .errors import ApiError, bad_request
from .tokens import chat_tokens, prompt_tokens

PREFIX_CHARS = 4096
Kind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class CallBody:
    kind: Kind
    model: str | None
    stream: bool
    input_tokens: int
    metadata: Mapping[str, Any] | None
    prefix: str
    upstream: bytes | None = None  # the body to forward in place of the client's bytes (rule 6)


def _typed(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise bad_request(f"'{key}' must be {what}, got a boolean", param=key, code="invalid_type")
    if not isinstance(value, kind):
        raise bad_request(
            f"'{key}' must be {what}, got {type(value).__name__}", param=key, code="invalid_type"
        )
    return value


def _check_messages(messages: Any) -> list[Any]:
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


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list) or not prompt:
        return False
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return True
    if all(isinstance(p, str) for p in prompt):
        return True
    return all(
        isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt
    )


def _chat_prefix(messages: list[Any]) -> str:
    parts: list[str] = []
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            size += len(content)
        if size >= PREFIX_CHARS:
            break
    return "".join(parts)[:PREFIX_CHARS]


def parse_call_body(kind: Kind, raw: bytes) -> CallBody:
    """Rules 1-5; raises :class:`~.errors.ApiError` (400) naming the offending field."""
    try:
        data = parse_json(raw)
    except JsonBodyError as exc:
        raise bad_request(str(exc), code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object", code="invalid_json")
    model = _typed(data, "model", str, "a string")
    stream = _typed(data, "stream", bool, "a boolean")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        _typed(data, key, int, "an integer")
    _typed(data, "stream_options", dict, "an object")
    metadata = _typed(data, "metadata", dict, "an object")
    if kind == "chat":
        messages = _check_messages(data.get("messages"))
        tokens = chat_tokens(messages)
        prefix = _chat_prefix(messages)
    else:
        prompt = data.get("prompt")
        if prompt is None:
            raise bad_request("'prompt' is required", param="prompt", code="missing_field")
        if not _is_prompt(prompt):
            raise bad_request(
                "'prompt' must be a string, a list of token ids, a list of strings or a list of token-id "
                "lists",
                param="prompt",
                code="invalid_type",
            )
        tokens = prompt_tokens(prompt)
        prefix = prompt[:PREFIX_CHARS] if isinstance(prompt, str) else ""
    upstream = None
    if "priority" in data:  # rule 6
        upstream = json.dumps({k: v for k, v in data.items() if k != "priority"}).encode()
    return CallBody(
        kind=kind,
        model=model,
        stream=bool(stream),
        input_tokens=tokens,
        metadata=metadata,
        prefix=prefix,
        upstream=upstream,
    )


__all__ = ["PREFIX_CHARS", "ApiError", "CallBody", "Kind", "parse_call_body"]
