"""``POST /v1/completions``: a prompt instead of messages, the same ``[DONE]`` stream as chat.

Body rules, on top of base.py's and chat.py's rule 2 (the same sampling fields):

1. ``prompt`` is required: a string, a list of token ids, a list of strings or a list of token-id lists.
2. Tokens: text at four characters a token, token ids exactly, a batch summed (tokens.py); the routing
   prefix is a string prompt's start.
"""

from __future__ import annotations

from typing import Any

from autellix.api_errors import bad_request

from ..tokens import prompt_tokens
from .base import PREFIX_CHARS, Api, CallBody, load_object, without_priority
from .chat import DONE_LINE, check_sampling, done_stream_error


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def is_prompt(prompt: Any) -> bool:
    """Rule 1."""
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list) or not prompt:
        return False
    return _is_token_ids(prompt) or all(isinstance(p, str) for p in prompt) or all(map(_is_token_ids, prompt))


def parse(raw: bytes) -> CallBody:
    data = load_object(raw)
    model, stream, metadata = check_sampling(data)
    prompt = data.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required", param="prompt", code="missing_field")
    if not is_prompt(prompt):
        raise bad_request(
            "'prompt' must be a string, a list of token ids, a list of strings or a list of token-id lists",
            param="prompt",
            code="invalid_type",
        )
    prefix = prompt[:PREFIX_CHARS] if isinstance(prompt, str) else ""
    return CallBody(
        "completion",
        model,
        stream,
        prompt_tokens(prompt),
        metadata,
        prefix,
        upstream=without_priority(data),
    )


COMPLETIONS = Api(
    name="completion",
    path="/v1/completions",
    error_shape="openai",
    parse=parse,
    stream_end=DONE_LINE,
    stream_marker=b"[DONE]",
    stream_error=done_stream_error,
)
