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
4. Shared prefixes are built once: :meth:`ProgramPrompts.prompt_ids` copies the ids of the leading
   messages a call shares with a recent call of its program from that call's prompt, and
   :meth:`ProgramPrompts.block_hashes` (the engine's prefix-cache names of the prompt's full blocks)
   reuses that call's hash chain over them and hashes only the blocks past them.
5. Counts agree with :func:`autellix.loadgen.program.message_tokens`; they can differ from encoding
   the whole rendered chat at once by a token at message borders (a punctuation run of the text
   tokenizer may straddle the end-of-turn marker there), which changes no figure that matters.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.simulator.kvcache import hash_token_blocks
from autellix.simulator.tokenizer import SPECIAL_TOKENS, apply_chat_template, encode

__all__ = ["GENERATION_HEADER", "ProgramPrompts", "TokenCache"]

_BOS = SPECIAL_TOKENS["<|begin_of_text|>"]
_CHAINS_KEPT = 8  # recent calls of a program whose prompt and block hashes are kept for reuse
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

    __slots__ = ("_cache", "_chains", "_prompts", "program")

    def __init__(self, program: ProgramSpec, cache: TokenCache | None = None) -> None:
        self.program = program
        self._cache = cache if cache is not None else TokenCache()
        # Recent calls of the program: (message indexes, prompt ids) and (message indexes, block hashes).
        self._prompts: list[tuple[tuple[int, ...], list[int]]] = []
        self._chains: list[tuple[tuple[int, ...], list[int]]] = []

    def prompt_ids(self, call: CallSpec) -> list[int]:
        """Rule 2; the leading messages shared with a recent call are copied from its prompt."""
        indexes = call.prompt
        shared, earlier = _longest_shared(indexes, self._prompts)
        messages = self.program.messages
        out = earlier[: self._length(indexes[:shared])] if shared else [_BOS]
        for index in indexes[shared:]:
            out += self._cache.message_ids(messages[index])
        out += GENERATION_HEADER
        _remember(self._prompts, indexes, out)
        return out

    def block_hashes(self, call: CallSpec, prompt: Sequence[int], block_size: int) -> list[int]:
        """``kvcache.hash_token_blocks(prompt, block_size)`` for ``prompt = prompt_ids(call)`` (or that
        prompt + more tokens), reusing the blocks it shares with a recent call (rule 4)."""
        indexes = call.prompt
        shared, earlier = _longest_shared(indexes, self._chains)
        reused = earlier[: self._length(indexes[:shared]) // block_size] if shared else []
        hashes = hash_token_blocks(prompt, block_size, reused)
        _remember(self._chains, indexes, hashes)
        return hashes

    def _length(self, indexes: Sequence[int]) -> int:
        """Tokens of ``<|begin_of_text|>`` + these messages."""
        messages = self.program.messages
        return 1 + sum(len(self._cache.message_ids(messages[i])) for i in indexes)

    def forget(self) -> None:
        """The program ended: drop what was kept for reuse."""
        self._prompts.clear()
        self._chains.clear()


def _longest_shared(
    indexes: Sequence[int], recent: Sequence[tuple[tuple[int, ...], list[int]]]
) -> tuple[int, list[int]]:
    """(leading messages shared, the kept list) of the recent call that shares the most with ``indexes``."""
    best: list[int] = []
    shared = 0
    for other, kept in recent:
        if len(other) > shared and indexes[: len(other)] == other:
            k = len(other)  # the usual case: a chain's call extends an earlier prompt (compared in C)
        else:
            k = 0
            for a, b in zip(indexes, other, strict=False):
                if a != b:
                    break
                k += 1
        if k > shared:
            shared, best = k, kept
    return shared, best


def _remember(
    recent: list[tuple[tuple[int, ...], list[int]]], indexes: tuple[int, ...], kept: list[int]
) -> None:
    recent.append((indexes, kept))
    if len(recent) > _CHAINS_KEPT:
        del recent[0]
