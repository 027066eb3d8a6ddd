"""Prompt token ids of a program's calls for the cluster simulation, built message by message.

Theory of operation
-------------------
The simulated engine caches prefixes of token ids, so the simulation must give a program's calls
token sequences in which the shared history really is a shared prefix (reference.md §1: intra-program
hit rates above 90 %). Re-tokenising the whole chat of every call would cost O(history) characters per
call, quadratic in a conversation's length, so:

1. Each message of the program's pool is rendered alone by the chat template and encoded once
   (``encode(apply_chat_template([m], False))`` minus its begin-of-text marker); the ids are cached
   per program and dropped when the program ends.
2. A call's prompt = ``<|begin_of_text|>`` + the cached ids of its messages in order + the assistant
   generation header. A chain's call ``j`` therefore starts with exactly the ids of call ``j-1``'s
   messages, and shared system prompts are identical across programs, as with a real tokenizer.
3. A :class:`TokenCache` shared by several runs (a sweep replays the same programs under every
   system and rate) keeps the ids of each distinct ``(role, content)`` once, as compact 16-bit arrays,
   so only the first run pays for tokenising.
4. Counts agree with :func:`autellix.loadgen.program.message_tokens`; they can differ from encoding
   the whole rendered chat at once by a token at message borders (a punctuation run of the text
   tokenizer may straddle the end-of-turn marker there), which changes no figure that matters.
"""

from __future__ import annotations

from array import array

from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.simulator.tokenizer import SPECIAL_TOKENS, apply_chat_template, encode

__all__ = ["GENERATION_HEADER", "ProgramPrompts", "TokenCache"]

_BOS = SPECIAL_TOKENS["<|begin_of_text|>"]
GENERATION_HEADER: tuple[int, ...] = tuple(encode("<|start_header_id|>assistant<|end_header_id|>\n\n"))


class TokenCache:
    """Token ids of rendered messages by ``(role, content)``, reusable across runs (rule 3)."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], array[int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def message_ids(self, message: Message) -> array[int]:
        key = (message.role, message.content)
        ids = self._ids.get(key)
        if ids is None:
            rendered = apply_chat_template([{"role": message.role, "content": message.content}], False)
            ids = array("H", encode(rendered)[1:])  # ids < VOCAB_SIZE = 32000 fit in 16 bits
            self._ids[key] = ids
        return ids


class ProgramPrompts:
    """Token ids of one program's call prompts (rules 1-2), through a shared or a private cache."""

    __slots__ = ("_cache", "program")

    def __init__(self, program: ProgramSpec, cache: TokenCache | None = None) -> None:
        self.program = program
        self._cache = cache if cache is not None else TokenCache()

    def prompt_ids(self, call: CallSpec) -> list[int]:
        out = [_BOS]
        messages = self.program.messages
        for index in call.prompt:
            out += self._cache.message_ids(messages[index])
        out += GENERATION_HEADER
        return out
