"""The decode group: running requests that decode one token a step, advanced in O(1) each (issue 14 item 5).

Why
---
Under load a simulated A100 engine runs ~256 sequences, almost all of them decoding, and the per-step
loop of :class:`~autellix.simulator.engine.SimEngine` touches every one of them twice (schedule, then
execute) although a decoding request's step is always the same: one token, one more KV slot, one more
generated id. This module keeps those requests in a *group* whose state is implicit in a clock, so an
engine step costs what changes in it (prefill chunks, admissions, block boundaries, finishes) instead
of the batch size. The step-time model stays exact: a step's shape is computed from the same integers.

Theory of operation
-------------------
1. Membership. A running request is a *decoder* when it needs exactly one token
   (``len(tokens) - num_computed == 1``) and its prefill is done (``num_computed >= prefill_end``): in
   the engine's rules it then takes one token a step, counts no prompt tokens and reports nothing
   until it finishes. Decoders join the group; every other running request stays an *other*.
2. The clock. ``clock`` counts the group's steps. A member that joined at ``clock0`` with ``computed0``
   and ``generated0`` has, before group step ``g``, ``computed0 + g - clock0`` computed tokens and
   ``generated0 + g - clock0`` generated ones (every member is scheduled in every group step; a step
   in which that would not hold is left to the per-step path, see engine.py). The sum of the
   members' decode contexts ``sum(computed + 1)`` is ``base + size * g`` with
   ``base = sum(computed0 - clock0 + 1)``: one integer, exactly the per-step sum.
3. Events. A member needs a new KV block when its computed tokens fill its blocks and registers a
   block in the prefix cache when its scheduled tokens fill one; with a *tight* table (exactly the
   blocks its computed tokens need, every full computed block registered, which is what the
   per-step walk leaves) that happens when ``computed % block_size`` is 0, resp. ``block_size - 1``.
   So a member's block events recur with period ``block_size`` at a fixed *phase*
   ``(computed0 - clock0) % block_size``: members are kept in one list per phase (in running order,
   ``seq``) and a step visits only the two lists whose turn it is, without rescheduling anything.
   A decoder whose table is not tight stays an other. Finishes are bucketed by their clock.
4. Lazy ids. Generated token ids are only needed to hash full blocks (prefix caching) and when a
   request leaves the group, so they are produced then, in order, with the same stream as the
   per-step path (:func:`fill_tokens`).
5. Leaving. A member leaves when it finishes, is aborted, or the group is *dissolved* (the engine
   falls back to its per-step path): its explicit fields are then set from the clock (``settle``),
   and the per-step code sees exactly the state it would have produced itself.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Generic, Protocol, TypeVar

from autellix.simulator.kvcache import BlockTable
from autellix.simulator.tokenizer import NUM_SPECIAL, VOCAB_SIZE

__all__ = ["DecodeGroup", "GroupMember", "fill_tokens"]

_SPAN = VOCAB_SIZE - NUM_SPECIAL


class GroupMember(Protocol):
    """The fields of the engine's request that the group reads and writes."""

    tokens: list[int]
    prompt_len: int
    output_len: int
    stream: int
    block_hashes: list[int]
    table: BlockTable
    num_computed: int
    num_generated: int
    seq: int
    in_group: bool
    clock0: int
    computed0: int
    generated0: int
    next_finish: int


M = TypeVar("M", bound=GroupMember)


def fill_tokens(req: GroupMember, length: int, block_size: int, caching: bool) -> None:
    """Append the request's generated ids up to ``length`` tokens and hash the blocks they fill
    (the per-step path appends one id a step and hashes a block when it fills: same values)."""
    tokens = req.tokens
    have = len(tokens)
    if have < length:
        stream = req.stream
        base = req.prompt_len
        special, span = NUM_SPECIAL, _SPAN
        tokens += [special + hash((stream, i)) % span for i in range(have - base, length - base)]
    if caching:
        hashes = req.block_hashes
        full = len(tokens) // block_size
        if len(hashes) < full:
            parent = hashes[-1] if hashes else 0
            for b in range(len(hashes), full):
                parent = hash((parent, tuple(tokens[b * block_size : (b + 1) * block_size])))
                hashes.append(parent)


class DecodeGroup(Generic[M]):
    """Members, their aggregate decode context, phase lists and finish buckets (rules 1-3)."""

    __slots__ = ("_finish", "_phases", "_seqs", "base", "block_size", "caching", "clock", "size")

    def __init__(self, block_size: int, caching: bool) -> None:
        self.block_size = block_size
        self.caching = caching
        self.clock = 0
        self.size = 0
        self.base = 0
        self._seqs: list[int] = []  # members' seq, sorted
        self._phases: list[list[M]] = [[] for _ in range(block_size)]  # by phase, each by seq
        self._finish: dict[int, list[M]] = {}

    # ----- membership ------------------------------------------------------------------------------

    def can_join(self, req: M) -> bool:
        """A decoder whose table is tight (rule 3)."""
        bs = self.block_size
        c = req.num_computed
        if len(req.table.blocks) != -(-c // bs):
            return False
        if not self.caching:
            return True
        return req.table.num_cached == c // bs and len(req.block_hashes) == (c + 1) // bs

    def join(self, req: M) -> None:
        """A tight decoder joins before the group step ``clock`` (rules 1-3)."""
        g = self.clock
        c = req.num_computed
        req.in_group = True
        req.clock0 = g
        req.computed0 = c
        req.generated0 = req.num_generated
        req.next_finish = g + req.output_len - req.num_generated - 1
        self.size += 1
        self.base += c - g + 1
        insort(self._seqs, req.seq)
        insort(self._phases[(c - g) % self.block_size], req, key=_seq_of)
        bucket = self._finish.get(req.next_finish)
        if bucket is None:
            self._finish[req.next_finish] = [req]
        else:
            bucket.append(req)

    def leave(self, req: M, *, fill: bool = True) -> None:
        """Take a member out, its explicit fields settled (rule 5); ``fill=False`` skips the ids (a
        request that is leaving the engine needs none)."""
        self.settle(req, fill=fill)
        req.in_group = False
        self.size -= 1
        self.base -= req.computed0 - req.clock0 + 1
        seqs = self._seqs
        del seqs[bisect_left(seqs, req.seq)]
        phase = self._phases[(req.computed0 - req.clock0) % self.block_size]
        del phase[bisect_left(phase, req.seq, key=_seq_of)]

    def settle(self, req: M, *, fill: bool = True) -> None:
        """Write the member's clock-implied counters (and ids) into its fields (it stays a member)."""
        steps = self.clock - req.clock0
        req.num_computed = req.computed0 + steps
        req.num_generated = req.generated0 + steps
        if fill:
            fill_tokens(req, req.prompt_len + req.num_generated, self.block_size, self.caching)

    def counters(self, req: M) -> tuple[int, int]:
        """(computed, generated) of a member now, without touching it."""
        steps = self.clock - req.clock0
        return req.computed0 + steps, req.generated0 + steps

    def members_before(self, seq: int) -> int:
        """How many members come before ``seq`` in running order."""
        return bisect_left(self._seqs, seq)

    def decode_context(self) -> int:
        """Sum over members of (computed + 1) in the current step (rule 2)."""
        return self.base + self.size * self.clock

    def reset(self) -> None:
        """Forget every member (the engine settled them first)."""
        self.size = 0
        self.base = 0
        self._seqs.clear()
        for phase in self._phases:
            phase.clear()
        self._finish.clear()

    # ----- events of the current step ----------------------------------------------------------------

    def allocating(self) -> list[M]:
        """Members that need a new block in this step (computed % block_size == 0), by seq."""
        return self._phases[-self.clock % self.block_size]

    def registering(self) -> list[M]:
        """Members whose scheduled tokens fill a block in this step, by seq (none without caching)."""
        if not self.caching:
            return []
        return self._phases[(-self.clock - 1) % self.block_size]

    def finishing(self) -> list[M]:
        """Members that generate their last token in this step, by seq."""
        bucket = self._finish.get(self.clock)
        if not bucket:
            return []
        g = self.clock
        live = [r for r in bucket if r.in_group and r.next_finish == g]
        if len(live) > 1:
            live.sort(key=_seq_of)
        return live

    def advance(self) -> None:
        """The current step is done: drop its finish bucket, move the clock."""
        self._finish.pop(self.clock, None)
        self.clock += 1


def _seq_of(req: GroupMember) -> int:
    return req.seq
