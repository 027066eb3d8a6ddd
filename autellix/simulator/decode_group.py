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
3. Events. A member does something of its own only at a few clock values: it needs a new KV block
   when its computed tokens reach its blocks' capacity, registers a block in the prefix cache when
   its scheduled tokens fill one, and finishes in the step that generates its last token. Each
   member sits in the bucket of its next event; a step handles only its bucket, in running order
   (admission order, ``seq``), as the per-step walk would. Stale bucket entries (a member that left)
   are skipped.
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
NEVER = 1 << 62  # an event that does not happen (prefix caching off: no registrations)


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
    next_alloc: int
    next_register: int
    next_finish: int
    next_event: int


M = TypeVar("M", bound=GroupMember)


def fill_tokens(req: GroupMember, length: int, block_size: int, caching: bool) -> None:
    """Append the request's generated ids up to ``length`` tokens and hash the blocks they fill
    (the per-step path appends one id a step and hashes a block when it fills: same values)."""
    tokens = req.tokens
    have = len(tokens)
    if have < length:
        stream = req.stream
        base = req.prompt_len
        tokens += [NUM_SPECIAL + hash((stream, i - base)) % _SPAN for i in range(have, length)]
    if caching:
        hashes = req.block_hashes
        full = len(tokens) // block_size
        if len(hashes) < full:
            parent = hashes[-1] if hashes else 0
            for b in range(len(hashes), full):
                parent = hash((parent, tuple(tokens[b * block_size : (b + 1) * block_size])))
                hashes.append(parent)


class DecodeGroup(Generic[M]):
    """Members, their aggregate decode context and their event buckets (rules 1-3)."""

    __slots__ = ("_buckets", "_seqs", "base", "block_size", "caching", "clock", "size")

    def __init__(self, block_size: int, caching: bool) -> None:
        self.block_size = block_size
        self.caching = caching
        self.clock = 0
        self.size = 0
        self.base = 0
        self._seqs: list[int] = []  # members' seq, sorted
        self._buckets: dict[int, list[M]] = {}

    # ----- membership ------------------------------------------------------------------------------

    def join(self, req: M) -> None:
        """A decoder joins before the group step ``clock`` (rule 1)."""
        g = self.clock
        c = req.num_computed
        req.in_group = True
        req.clock0 = g
        req.computed0 = c
        req.generated0 = req.num_generated
        bs = self.block_size
        req.next_alloc = g + max(0, len(req.table.blocks) * bs - c)
        req.next_register = g + max(0, (req.table.num_cached + 1) * bs - 1 - c) if self.caching else NEVER
        req.next_finish = g + req.output_len - req.num_generated - 1
        self.size += 1
        self.base += c - g + 1
        insort(self._seqs, req.seq)
        self._schedule(req)

    def leave(self, req: M, *, fill: bool = True) -> None:
        """Take a member out, its explicit fields settled (rule 5); ``fill=False`` skips the ids (a
        request that is leaving the engine needs none)."""
        self.settle(req, fill=fill)
        req.in_group = False
        self.size -= 1
        self.base -= req.computed0 - req.clock0 + 1
        seqs = self._seqs
        del seqs[bisect_left(seqs, req.seq)]

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
        self._buckets.clear()

    # ----- events ------------------------------------------------------------------------------------

    def _schedule(self, req: M) -> None:
        nxt = min(req.next_alloc, req.next_register, req.next_finish)
        req.next_event = nxt
        bucket = self._buckets.get(nxt)
        if bucket is None:
            self._buckets[nxt] = [req]
        else:
            bucket.append(req)

    def due(self) -> list[M]:
        """Members with an event in the current step, in running order (stale entries dropped); the
        bucket stays until :meth:`advance`."""
        bucket = self._buckets.get(self.clock)
        if not bucket:
            return []
        g = self.clock
        live = [r for r in bucket if r.in_group and r.next_event == g]
        if len(live) > 1:
            live.sort(key=_seq_of)
        return live

    def advance(self) -> None:
        """The current step is done: drop its bucket, move the clock."""
        self._buckets.pop(self.clock, None)
        self.clock += 1

    def reschedule(self, req: M) -> None:
        """After the member's events of the current step: its next one (from its table as it is now)."""
        g = self.clock
        bs = self.block_size
        computed = req.computed0 + g - req.clock0 + 1  # after this step
        if req.next_alloc <= g:
            req.next_alloc = g + 1 + max(0, len(req.table.blocks) * bs - computed)
        if req.next_register <= g:
            req.next_register = g + 1 + max(0, (req.table.num_cached + 1) * bs - 1 - computed)
        self._schedule(req)


def _seq_of(req: GroupMember) -> int:
    return req.seq
