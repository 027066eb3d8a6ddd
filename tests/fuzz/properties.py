"""What every answer of a fuzzed request must be (the issue's properties), checked in one place."""

from __future__ import annotations

import json
from typing import Any

from autellix.api_errors import error_shape_of

TIMEOUT = 15.0  # "never a hang past a bound": every request is answered (or its stream ends) within it


def check_answer(path: str, status: int, content_type: str, body: bytes, vllm_words: bool = False) -> None:
    """Never a 5xx; an error is JSON in the route's API shape (Anthropic's on the Messages routes).

    ``vllm_words``: either shape is accepted (the simulated engine answers as vLLM does, whose Messages
    routes word validation errors in OpenAI's shape: simulator/messages_api.py rule 2).
    """
    assert status < 500, f"{status} on {path}: {body[:500]!r}"
    if status < 400:
        return
    assert content_type.startswith("application/json"), (
        f"{status} on {path} is {content_type}: {body[:300]!r}"
    )
    payload: Any = json.loads(body)
    if vllm_words and "type" not in payload:
        assert isinstance(payload["error"]["message"], str), payload
    elif error_shape_of(path) == "anthropic":
        assert payload.get("type") == "error", payload
        assert isinstance(payload["error"]["type"], str) and isinstance(payload["error"]["message"], str)
    else:
        error = payload["error"]
        assert isinstance(error["message"], str) and error["message"], payload
        assert "type" in error, payload


def check_stream(path: str, body: bytes) -> None:
    """A stream that ends early says so: its last event is an error event or the API's own end."""
    text = body.decode("utf-8", errors="replace").rstrip()
    if not text:
        return
    last_events = text.split("\n\n")[-2:]
    tail = "\n\n".join(last_events)
    ends = ("[DONE]", "message_stop", "response.completed", "response.failed", "response.incomplete", "error")
    assert any(end in tail for end in ends), f"stream on {path} ended without its end: {tail[-300:]!r}"
