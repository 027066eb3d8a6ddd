"""Text of a given token length: modelled prose, and real text cut or stretched to a length.

Workloads need texts whose length in the project's tokenizer (``autellix.simulator.tokenizer``) is
known: a recorded answer about as long as the tokens the engine is forced to produce, a user turn or
a tool result as long as its length distribution says.

1. Counting without encoding: the tokenizer cuts text into regex pieces and gives a piece of up to 6
   characters one token, a longer one one token per 5 characters (its rule 1). :func:`count_tokens`
   applies that rule to the same pieces without hashing them (~3x faster than ``encode``); it equals
   ``len(encode(text))`` except on the tokenizer's invented vocabulary words longer than 6
   characters, which real text hardly ever spells (off by ~1 token in 100k on ShareGPT).
   A unit test pins the two together, so a change of the tokenizer's rule shows up there.
2. :func:`prose` writes English-looking sentences from a fixed word list (modelled text).
3. :func:`fit_text` turns a real text into one of ``target`` tokens: it walks the pieces and stops
   at the first piece boundary that reaches the target; a text that is too short is continued
   (after a blank line) with further texts the caller supplies, typically other real texts.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

from autellix.simulator.tokenizer import PIECE_PATTERN, SPECIAL_TOKENS, encode

__all__ = ["count_tokens", "fit_text", "prose"]

_PIECE = PIECE_PATTERN  # the tokenizer's own pre-tokenizer, so counts here are exact
_MAX_PIECE = 6
_CHUNK = 5

_WORD_TEXT = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there one all their we can has been if more when will would who so "
    "no other into its time only new some could these may first then do any like my now over such our "
    "man me even most made after also did many before must through back years where much your way well "
    "down should because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while last might "
    "us great old year off come since against go came right used take three city river album film team "
    "season league county village born released station district university company party school house "
    "book group record army church region series species navy award island road line music game "
    "question answer search result page article found shows known located named played founded built "
    "served written directed produced larger older earlier later during within across toward "
    "therefore however although further second third final next previous current total number "
    "value check verify compare select return output input file folder report data list table"
)


def _piece_tokens(piece: str) -> int:
    if len(piece) <= _MAX_PIECE or piece in SPECIAL_TOKENS:
        return 1
    return -(-len(piece) // _CHUNK)


def count_tokens(text: str) -> int:
    """Length of ``text`` in the project's tokenizer (see rule 1)."""
    pieces = _PIECE.findall(text)
    long_pieces = [p for p in pieces if len(p) > _MAX_PIECE]
    return len(pieces) + sum(_piece_tokens(p) - 1 for p in long_pieces)


@functools.cache
def _lexicon() -> tuple[tuple[str, ...], tuple[int, ...], int]:
    words = tuple(dict.fromkeys(_WORD_TEXT.split()))
    counts = tuple(len(encode(" " + word)) for word in words)
    return words, counts, len(encode("."))


def prose(rng: random.Random, tokens: int) -> str:
    """Sentences of about ``tokens`` tokens (exact up to the first word's missing leading space)."""
    if tokens <= 0:
        return ""
    words, counts, stop = _lexicon()
    sentence = rng.randint(6, 16)  # words per sentence; a full stop costs `stop` tokens
    picks: list[int] = []
    total = 0
    kept = 0
    while total < tokens:  # words average ~1.2 tokens, so one draw is nearly always enough
        picks += rng.choices(range(len(words)), k=tokens - total + 2)
        for k in picks[kept:]:
            kept += 1
            total += counts[k] + (stop if kept % sentence == 0 else 0)
            if total >= tokens:
                break
    out = [words[k] for k in picks[:kept]]
    for position in range(0, kept, sentence):
        out[position] = out[position].capitalize()
        end = position + sentence - 1
        if end < kept - 1 or (end == kept - 1 and kept % sentence == 0):
            out[end] += "."
    return " ".join(out)


def fit_text(text: str, target: int, more: Callable[[], str]) -> str:
    """``text`` cut, or continued with ``more()`` texts, to ``target`` tokens (at least 1)."""
    target = max(1, target)
    parts: list[str] = []
    have = 0
    # Joined parts are stripped, so each joining blank line is exactly one piece (one token).
    source = text.rstrip()
    empty = 0
    while True:
        for match in _PIECE.finditer(source):
            tokens = _piece_tokens(match.group())
            if have + tokens >= target:
                # A long piece is cut in 5-character chunks: keep just enough of them.
                end = match.end() if tokens == 1 else match.start() + (target - have) * _CHUNK
                parts.append(source[:end])
                return "".join(parts)
            have += tokens
        parts.append(source)
        extra = more().strip()
        if not extra:
            empty += 1
            if empty > 100:
                raise ValueError("fit_text: the source of further text keeps returning empty texts")
            source = ""
            continue
        source = "\n\n" + extra if "".join(parts) else extra
