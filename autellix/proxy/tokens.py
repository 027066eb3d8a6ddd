"""A cheap estimate of a call's input tokens, for the locality rule (paper Alg. 2, reference.md §1).

Theory of operation
-------------------
Routing needs to know only whether a call is longer than the short-call threshold (2048 tokens in the
paper), and it needs it before the engine has tokenised anything, on the proxy's hot path. So:

1. Text counts as ``ceil(characters / 4)`` tokens: OpenAI's rule of thumb for English text with BPE
   tokenisers (Llama 3's and GPT-4's average 3.5-4.5 characters per token on prose and code).
2. A chat call counts the text of every message (string content, and the ``text`` of content parts),
   plus :data:`PER_MESSAGE_TOKENS` per message for the chat template's role markers.
3. A completions prompt given as token ids counts exactly (one per id); a batch of prompts counts all.
4. Anything else (images, tool schemas) is ignored: an estimate, never a reason to reject a call.

The error is a few tens of percent on unusual text (CJK, long numbers); near the threshold a call may
land on the "wrong" side, which costs at most a prefix-cache miss, never correctness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
PER_MESSAGE_TOKENS = 4


def text_tokens(characters: int) -> int:
    return -(-characters // CHARS_PER_TOKEN)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Sequence):
        total = 0
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    total += len(text)
        return total
    return 0


def chat_tokens(messages: Sequence[Any]) -> int:
    """Rule 2: the messages' text at four characters a token, plus the template's share per message."""
    characters = 0
    for message in messages:
        if isinstance(message, Mapping):
            characters += _content_chars(message.get("content"))
    return text_tokens(characters) + PER_MESSAGE_TOKENS * len(messages)


def prompt_tokens(prompt: Any) -> int:
    """Rules 1 and 3 for ``/v1/completions``: a string, token ids, or a batch of either."""
    if isinstance(prompt, str):
        return text_tokens(len(prompt))
    if isinstance(prompt, Sequence) and prompt:
        if all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(prompt_tokens(item) for item in prompt)
    return 0
