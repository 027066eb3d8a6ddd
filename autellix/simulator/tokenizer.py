"""A deterministic, cheap stand-in for a BPE tokenizer, for the simulated engine.

Theory of operation
-------------------
1. ``encode`` splits text into pieces like GPT-style pre-tokenizers do: special markers
   (``<|...|>``), a word with its leading space, a number, a run of punctuation, whitespace.
   A piece that is a word of the fixed vocabulary gets that word's id; any other piece of up to
   6 characters (a 5-letter word with its space) gets one id and a longer one is cut into
   5-character chunks, one id each, so English prose costs about one token per 4 characters, as
   with real BPE vocabularies (code and numbers cost more, as they do there).
2. Ids of unknown pieces come from ``zlib.crc32`` (stable across runs, unlike the salted ``hash``
   of a str) folded into ``[NUM_SPECIAL, VOCAB_SIZE)``; ids below ``NUM_SPECIAL`` are special tokens.
3. The vocabulary (``vocab_word``) is a fixed function of the id: a space and 1-3 syllables, all
   distinct. ``decode`` concatenates words, and ``encode(decode(ids)) == ids`` for non-special ids,
   so generated text that a client sends back as chat history re-encodes to the same ids and hits
   the prefix cache, as it does with a real tokenizer.
4. ``apply_chat_template`` renders messages Llama-3 style (role headers, end-of-turn markers), so a
   conversation's history is a token prefix of its next turn.
5. ``generated_token_id(seed, key, index)`` is the i-th generated id of a request: a pure function
   of its arguments, never a special id.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

__all__ = [
    "NUM_SPECIAL",
    "PIECE_PATTERN",
    "SPECIAL_TOKENS",
    "VOCAB_SIZE",
    "apply_chat_template",
    "decode",
    "encode",
    "generated_token_id",
    "generated_token_stream",
    "stream_token_id",
    "vocab_word",
]

VOCAB_SIZE = 32_000
SPECIAL_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        "<|pad|>": 0,
        "<|begin_of_text|>": 1,
        "<|end_of_text|>": 2,
        "<|start_header_id|>": 3,
        "<|end_header_id|>": 4,
        "<|eot_id|>": 5,
        "<|python_tag|>": 6,
        "<|eom_id|>": 7,
    }
)
NUM_SPECIAL = 16  # ids below this are reserved for special tokens
_SPAN = VOCAB_SIZE - NUM_SPECIAL
_MAX_PIECE = 6  # longest piece that is one token (leading space included)
_CHUNK = 5  # longer pieces are cut into chunks of this many characters

# Special markers (<|...|>) always stand alone: punctuation before one must not swallow its '<|'.
PIECE_PATTERN = re.compile(
    r"<\|[a-z_]+\|>| ?[A-Za-z]+| ?[0-9]+| ?(?:[^\sA-Za-z0-9<]|<(?!\|))+|\s*\n|\s+(?!\S)|\s+"
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_SYLLABLES = tuple(o + v for o in _ONSETS for v in _VOWELS)  # 128 distinct syllables
_NSYL = len(_SYLLABLES)


def _word_for_index(k: int) -> str:
    # Bijective numbering: 1-syllable words first, then 2-, then 3-syllable ones.
    if k < _NSYL:
        return " " + _SYLLABLES[k]
    k -= _NSYL
    if k < _NSYL * _NSYL:
        return " " + _SYLLABLES[k // _NSYL] + _SYLLABLES[k % _NSYL]
    k -= _NSYL * _NSYL
    return (
        " "
        + _SYLLABLES[k // (_NSYL * _NSYL) % _NSYL]
        + _SYLLABLES[k // _NSYL % _NSYL]
        + _SYLLABLES[k % _NSYL]
    )


_SPECIAL_BY_ID: Mapping[int, str] = MappingProxyType({v: k for k, v in SPECIAL_TOKENS.items()})
_VOCAB: tuple[str, ...] = tuple(_word_for_index(i) for i in range(_SPAN))
# Syllables are prefix-ambiguous ("sha" vs "s"+"ha"), so keep only the first id of a spelling.
_VOCAB_IDS: Mapping[str, int] = MappingProxyType(
    {word: NUM_SPECIAL + i for i, word in reversed(list(enumerate(_VOCAB)))}
)


def vocab_word(token_id: int) -> str:
    """The text of one token id (special tokens render as their marker)."""
    if token_id < NUM_SPECIAL:
        return _SPECIAL_BY_ID.get(token_id, f"<|reserved_{token_id}|>")
    return _VOCAB[(token_id - NUM_SPECIAL) % _SPAN]


def _piece_id(piece: str) -> int:
    return NUM_SPECIAL + zlib.crc32(piece.encode()) % _SPAN


def encode(text: str) -> list[int]:
    """Token ids of ``text``: same text, same ids."""
    ids: list[int] = []
    append = ids.append
    vocab = _VOCAB_IDS
    special = SPECIAL_TOKENS
    for piece in PIECE_PATTERN.findall(text):
        known = vocab.get(piece)
        if known is not None:
            append(known)
        elif len(piece) <= _MAX_PIECE:
            append(_piece_id(piece))
        elif piece[0] == "<" and piece in special:
            append(special[piece])
        else:
            for start in range(0, len(piece), _CHUNK):
                append(_piece_id(piece[start : start + _CHUNK]))
    return ids


def decode(ids: Iterable[int]) -> str:
    """Text of token ids (the inverse of :func:`encode` on vocabulary words)."""
    return "".join(vocab_word(i) for i in ids)


def apply_chat_template(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """Llama-3-style chat text: each message under a role header, ended by ``<|eot_id|>``."""
    parts = ["<|begin_of_text|>"]
    for message in messages:
        role = message.get("role", "user")
        parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{message.get('content', '')}<|eot_id|>")
    if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def generated_token_stream(seed: int, request_key: int | str) -> int:
    """A per-request stream base for :func:`generated_token_id` (stable across runs)."""
    return zlib.crc32(f"{seed}:{request_key}".encode())


def stream_token_id(stream: int, index: int) -> int:
    """The ``index``-th id of a stream made by :func:`generated_token_stream`."""
    # hash() of a tuple of ints is not salted, so this is deterministic across runs.
    return NUM_SPECIAL + hash((stream, index)) % _SPAN


def generated_token_id(seed: int, request_key: int | str, index: int) -> int:
    """The ``index``-th generated token id of a request: deterministic per (seed, key, index)."""
    return stream_token_id(generated_token_stream(seed, request_key), index)
