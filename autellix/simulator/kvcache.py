"""KV block pool with vLLM V1-style automatic prefix caching (reference.md §4, DESIGN.md §4).

Theory of operation
-------------------
The GPU's KV cache is ``num_blocks`` blocks of ``block_size`` token slots. A request owns a
:class:`BlockTable`: the ids of its blocks in token order.

1. Identity. A *full* block of a token sequence is named by a hash chain:
   ``h_i = hash((h_{i-1}, tuple(tokens of block i)))`` with ``h_{-1} = 0`` (:func:`hash_block_tokens`).
   Equal chains mean equal prefixes, so one lookup per block finds the longest cached prefix.
   Callers hash each block once, when it becomes full, and keep the list with the request.
2. Reference counts. A block is referenced once per request holding it. Only computed full blocks
   are registered in the hash map (``cache_full_blocks``); a block whose hash is already registered
   stays anonymous (its content is cached elsewhere).
3. LRU free queue. Every block with ref count 0 is in the free queue, cached or not; the queue front
   is evicted first. Freeing a request appends its blocks *tail first*, so a chain's deepest blocks
   are evicted before its shared head (as vLLM does). A hit on a free cached block takes it out of
   the queue; taking a fresh block pops the front and drops its hash (eviction).
4. Lookup (``get_computed_blocks``) returns the longest run of cached blocks of the request's hash
   chain, capped at ``(num_tokens - 1) // block_size`` blocks so at least one token is computed
   (the model must produce logits for the last prompt token). It has no side effects.
5. Allocation (``allocate_slots``) is atomic: it needs as many free blocks as fresh blocks plus the
   hit blocks it takes out of the free queue, or it changes nothing and returns False.
6. With prefix caching off nothing is registered and lookups return nothing.

Usage is ``1 - free / num_blocks``: cached but unreferenced blocks count as free, as in vLLM.
The block hash is Python's built-in hash of a tuple of ints, which is deterministic across runs
(only str/bytes hashing is salted); a 64-bit collision would only cause a spurious cache hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["BlockTable", "KVCacheManager", "KVCacheStats", "hash_block_tokens", "hash_token_blocks"]


def hash_block_tokens(parent_hash: int, block_tokens: Sequence[int]) -> int:
    """Hash of one full block given the hash of the block before it (0 for the first)."""
    return hash((parent_hash, tuple(block_tokens)))


def hash_token_blocks(
    token_ids: Sequence[int], block_size: int, hashes: list[int] | None = None
) -> list[int]:
    """Extend ``hashes`` (the chain of the leading full blocks of ``token_ids``) to every full block."""
    out = [] if hashes is None else hashes
    parent = out[-1] if out else 0
    for start in range(len(out) * block_size, len(token_ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(token_ids[start : start + block_size])))
        out.append(parent)
    return out


@dataclass(slots=True)
class BlockTable:
    """The blocks one request holds, in token order."""

    blocks: list[int] = field(default_factory=list)
    num_cached: int = 0  # leading blocks already registered in (or taken from) the prefix cache


@dataclass(frozen=True, slots=True)
class KVCacheStats:
    num_blocks: int
    num_free_blocks: int
    num_cached_blocks: int  # blocks registered in the hash map (referenced or not)
    usage: float  # 1 - free / total, in [0, 1]
    prefix_queries: int  # tokens looked up, cumulative
    prefix_hits: int  # tokens found cached, cumulative


class KVCacheManager:
    """The block pool, hash map and LRU free queue of one engine."""

    __slots__ = (
        "_block_hash",
        "_cached",
        "_free",
        "block_size",
        "enable_prefix_caching",
        "num_blocks",
        "prefix_hits",
        "prefix_queries",
        "ref_counts",
    )

    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self._block_hash: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id
        # Insertion-ordered set (values unused): O(1) pop-front, append and removal from the middle.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def stats(self) -> KVCacheStats:
        return KVCacheStats(
            num_blocks=self.num_blocks,
            num_free_blocks=len(self._free),
            num_cached_blocks=len(self._cached),
            usage=self.usage,
            prefix_queries=self.prefix_queries,
            prefix_hits=self.prefix_hits,
        )

    def free_queue(self) -> list[int]:
        """Free block ids in eviction order (first = evicted next); for tests and debugging."""
        return list(self._free)

    def block_hash(self, block_id: int) -> int | None:
        return self._block_hash[block_id]

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._cached

    def get_computed_blocks(self, block_hashes: Sequence[int], num_tokens: int) -> list[int]:
        """Block ids of the longest cached prefix of a request with ``num_tokens`` tokens (rule 4)."""
        if not self.enable_prefix_caching:
            return []
        limit = min(len(block_hashes), (num_tokens - 1) // self.block_size)
        # The lookups run in C (a miss is None); the longest run is cut at the first miss.
        found = list(map(self._cached.get, block_hashes[:limit]))
        if None in found:
            del found[found.index(None) :]
        return found  # type: ignore[return-value]  # the Nones were cut

    def record_prefix_query(self, num_tokens: int, num_hit_tokens: int) -> None:
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hit_tokens

    def allocate_slots(self, table: BlockTable, num_tokens: int, computed_blocks: Sequence[int] = ()) -> bool:
        """Give ``table`` (plus ``computed_blocks``, prefix hits appended first) room for ``num_tokens``
        tokens; atomic (rule 5)."""
        free = self._free
        ref = self.ref_counts
        needed = -(-num_tokens // self.block_size) - len(table.blocks) - len(computed_blocks)
        if needed < 0:
            needed = 0
        blocks = table.blocks
        if computed_blocks:
            # Hit blocks are distinct (one hash each), so their counts can be read once, in C.
            counts = list(map(ref.__getitem__, computed_blocks))
            if needed + counts.count(0) > len(free):
                return False
            for b, r in zip(computed_blocks, counts, strict=True):
                if r == 0:
                    del free[b]
                ref[b] = r + 1
            blocks.extend(computed_blocks)
            table.num_cached = len(blocks)
        elif needed > len(free):
            return False
        if needed:
            hashes = self._block_hash
            cached = self._cached
            for _ in range(needed):
                b = free.popitem(last=False)[0]
                h = hashes[b]
                if h is not None:
                    del cached[h]
                    hashes[b] = None
                ref[b] = 1
                blocks.append(b)
        return True

    def append_block(self, table: BlockTable) -> None:
        """Give ``table`` one fresh block (a decode crossing a block boundary); the caller has made
        sure a block is free. The same as ``allocate_slots`` for one more block."""
        b = self._free.popitem(last=False)[0]
        h = self._block_hash[b]
        if h is not None:
            del self._cached[h]
            self._block_hash[b] = None
        self.ref_counts[b] = 1
        table.blocks.append(b)

    def cache_full_blocks(
        self, table: BlockTable, block_hashes: Sequence[int], num_computed_tokens: int
    ) -> None:
        """Register the table's full, computed blocks not registered yet (rule 2)."""
        if not self.enable_prefix_caching:
            return
        upto = min(num_computed_tokens // self.block_size, len(block_hashes), len(table.blocks))
        if upto <= table.num_cached:
            return
        cached = self._cached
        hashes = self._block_hash
        blocks = table.blocks
        for i in range(table.num_cached, upto):
            h = block_hashes[i]
            if h not in cached:
                b = blocks[i]
                cached[h] = b
                hashes[b] = h
        table.num_cached = upto

    def free(self, table: BlockTable) -> None:
        """Release every block of ``table``, tail first (rule 3), and empty it."""
        ref = self.ref_counts
        free = self._free
        for b in reversed(table.blocks):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                free[b] = None
        table.blocks = []
        table.num_cached = 0
