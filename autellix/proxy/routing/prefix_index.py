"""An approximate prefix tree of the prompts recently routed to each engine (for prefix affinity).

Theory of operation (the idea of SGLang's cache-aware router; the block granularity of vLLM's cache)
----------------------------------------------------------------------------------------------------
1. A prompt is cut into full blocks of ``block_tokens`` token ids (16: vLLM's block) or, for text,
   ``block_chars`` characters (128, about two such blocks: the routing rule compares a match ratio
   with a threshold, so finer blocks would only double the hashing); a trailing partial block is
   ignored, as engines cache full blocks only. Block i's key is
   ``hash((key of block i-1, block i))``, so a key names a whole prefix and the keys form a tree
   (a key's parent is its predecessor's key) without storing any edges.
2. Per engine the index keeps the keys of the blocks routed to it, in LRU order, at most
   ``max_blocks_per_engine`` of them; ``holders[key]`` lists the engines that hold a key.
3. Inserting a prompt touches its keys from the last block to the first, so an ancestor is always more
   recent than its descendants and LRU eviction removes leaves before their parents: each engine's
   keys stay closed under ancestors (a subtree), as an engine's own prefix cache frees tails first.
4. So along one prompt the holder sets are nested (holders of block i+1 ⊆ holders of block i) and an
   engine's match is the depth at which it drops out. The walk stops at the first block nobody holds;
   it costs one dict lookup per matched block plus O(engines) at the depths where the set shrinks.
5. Keys are Python hashes: equal prefixes give equal keys, a false match needs a 64-bit collision.
   Text hashes are salted per process, so an index is private to its process (each proxy replica
   keeps its own approximate view, as each SGLang router does).
6. Memory is bounded: at most engines x ``max_blocks_per_engine`` keys; :meth:`prune` forgets the
   engines that left the fleet (unhealthy ones are kept: their cache may survive a blip).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .base import EngineView


class PrefixIndex:
    def __init__(
        self, *, block_chars: int = 128, block_tokens: int = 16, max_blocks_per_engine: int = 16384
    ) -> None:
        if min(block_chars, block_tokens, max_blocks_per_engine) < 1:
            raise ValueError("block sizes and max_blocks_per_engine must be >= 1")
        self.block_chars = block_chars
        self.block_tokens = block_tokens
        self.max_blocks_per_engine = max_blocks_per_engine
        self._holders: dict[int, dict[str, None]] = {}  # key -> engines holding it (an ordered set)
        self._lru: dict[str, OrderedDict[int, None]] = {}  # engine -> its keys, least recent first

    def block_keys(self, prompt: str | tuple[int, ...]) -> list[int]:
        """Rule 1: the chained keys of the prompt's full blocks."""
        size = self.block_chars if isinstance(prompt, str) else self.block_tokens
        keys: list[int] = []
        key = 0
        for start in range(0, len(prompt) - size + 1, size):
            key = hash((key, prompt[start : start + size]))
            keys.append(key)
        return keys

    def match(self, keys: Sequence[int]) -> dict[str, int]:
        """Rule 4: matched leading blocks per engine that holds at least the first block."""
        depth_of: dict[str, int] = {}
        previous: dict[str, None] | None = None
        depth = 0
        for key in keys:
            holders = self._holders.get(key)
            if holders is None:
                break
            if previous is not None and len(holders) != len(previous):
                for engine in previous:
                    if engine not in holders:
                        depth_of[engine] = depth
            previous = holders
            depth += 1
        if previous is not None:
            for engine in previous:
                depth_of[engine] = depth
        return depth_of

    def insert(self, engine_id: str, keys: Sequence[int]) -> None:
        """Rules 2-3: record that ``engine_id`` now caches this prompt's blocks."""
        lru = self._lru.get(engine_id)
        if lru is None:
            lru = self._lru[engine_id] = OrderedDict()
        holders_of = self._holders
        for key in reversed(keys):
            if key in lru:
                lru.move_to_end(key)
                continue
            lru[key] = None
            holders = holders_of.get(key)
            if holders is None:
                holders_of[key] = {engine_id: None}
            else:
                holders[engine_id] = None
        for _ in range(len(lru) - self.max_blocks_per_engine):
            evicted, _ = lru.popitem(last=False)
            self._drop_holder(evicted, engine_id)

    def size(self, engine_id: str) -> int:
        """Blocks held for an engine: the size of its tree."""
        lru = self._lru.get(engine_id)
        return 0 if lru is None else len(lru)

    def sizes(self, engine_ids: Sequence[str]) -> list[int]:
        get = self._lru.get
        return [len(get(engine_id, ())) for engine_id in engine_ids]

    def engines(self) -> tuple[str, ...]:
        return tuple(self._lru)

    def total_keys(self) -> int:
        return len(self._holders)

    def forget(self, engine_id: str) -> None:
        for key in self._lru.pop(engine_id, ()):
            self._drop_holder(key, engine_id)

    def prune(self, fleet: Sequence[EngineView]) -> None:
        """Forget engines that are not in the fleet view (cheap when none left: a length check)."""
        if len(self._lru) <= len(fleet):
            return
        present = {engine.engine_id for engine in fleet}
        for engine_id in [engine_id for engine_id in self._lru if engine_id not in present]:
            self.forget(engine_id)

    def _drop_holder(self, key: int, engine_id: str) -> None:
        holders = self._holders[key]
        del holders[engine_id]
        if not holders:
            del self._holders[key]
