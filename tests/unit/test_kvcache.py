"""The KV block pool: hash chains, capped prefix hits, ref counts, LRU eviction, atomic allocation."""

from __future__ import annotations

import pytest

from autellix.simulator.kvcache import BlockTable, KVCacheManager, hash_block_tokens, hash_token_blocks

BS = 4  # small blocks keep the examples readable


def pool(blocks: int = 8, caching: bool = True) -> KVCacheManager:
    return KVCacheManager(blocks, block_size=BS, enable_prefix_caching=caching)


def admit(kv: KVCacheManager, tokens: list[int], scheduled: int | None = None) -> BlockTable | None:
    """Look up, allocate and (as after the step) register the computed full blocks of a prompt."""
    hashes = hash_token_blocks(tokens, BS)
    hits = kv.get_computed_blocks(hashes, len(tokens))
    table = BlockTable()
    total = len(tokens) if scheduled is None else len(hits) * BS + scheduled
    if not kv.allocate_slots(table, total, hits):
        return None
    kv.cache_full_blocks(table, hashes, total)
    return table


def test_hash_chain_names_prefixes() -> None:
    a = hash_token_blocks(list(range(12)), BS)
    b = hash_token_blocks([*range(8), 99, 99, 99, 99], BS)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    # The same block content under a different parent is a different block.
    assert hash_block_tokens(0, [4, 5, 6, 7]) != a[1]
    assert a[1] == hash_block_tokens(a[0], [4, 5, 6, 7])
    # Partial blocks are not hashed; extending a chain keeps its head.
    assert hash_token_blocks(list(range(11)), BS) == a[:2]
    assert hash_token_blocks(list(range(12)), BS, hash_token_blocks(list(range(8)), BS)) == a


def test_fresh_allocation_takes_blocks_from_the_front_and_counts_usage() -> None:
    kv = pool(8)
    table = BlockTable()
    assert kv.allocate_slots(table, 9)
    assert table.blocks == [0, 1, 2]
    assert [kv.ref_counts[b] for b in table.blocks] == [1, 1, 1]
    assert kv.num_free_blocks == 5 and kv.usage == pytest.approx(3 / 8)
    # Growing within the last block needs nothing new; crossing a boundary needs one more.
    assert kv.allocate_slots(table, 12) and table.blocks == [0, 1, 2]
    assert kv.allocate_slots(table, 13) and table.blocks == [0, 1, 2, 3]


def test_allocation_is_atomic() -> None:
    kv = pool(4)
    a = BlockTable()
    assert kv.allocate_slots(a, 12)
    b = BlockTable()
    assert not kv.allocate_slots(b, 8)
    assert b.blocks == [] and kv.num_free_blocks == 1 and kv.ref_counts == [1, 1, 1, 0]


def test_hit_is_capped_so_one_token_is_computed() -> None:
    kv = pool(16)
    prompt = list(range(8))  # exactly two full blocks
    first = admit(kv, prompt)
    assert first is not None
    kv.free(first)
    # Same 8 tokens again: at most 7 may be hit, whole blocks only -> 1 block.
    assert len(kv.get_computed_blocks(hash_token_blocks(prompt, BS), 8)) == 1
    # One more token: both blocks hit.
    longer = [*prompt, 50]
    assert len(kv.get_computed_blocks(hash_token_blocks(longer, BS), 9)) == 2
    # A divergent second block: only the first hits.
    other = [0, 1, 2, 3, 9, 9, 9, 9, 9]
    assert kv.get_computed_blocks(hash_token_blocks(other, BS), 9) == first_blocks(kv, prompt)[:1]


def first_blocks(kv: KVCacheManager, tokens: list[int]) -> list[int]:
    return kv.get_computed_blocks(hash_token_blocks(tokens, BS), len(tokens) + 1)


def test_only_computed_full_blocks_are_cached() -> None:
    kv = pool(8)
    prompt = list(range(10))  # 2 full blocks + 2 tokens
    table = admit(kv, prompt, scheduled=5)  # a chunk: 1 full block computed so far
    assert table is not None
    assert len(first_blocks(kv, prompt)) == 1
    assert kv.allocate_slots(table, 10)
    kv.cache_full_blocks(table, hash_token_blocks(prompt, BS), 10)
    assert len(first_blocks(kv, prompt)) == 2
    assert table.num_cached == 2 and kv.stats().num_cached_blocks == 2


def test_shared_blocks_are_ref_counted_and_stay_cached_when_unreferenced() -> None:
    kv = pool(8)
    prompt = list(range(9))
    a = admit(kv, prompt)
    b = admit(kv, prompt)
    assert a is not None and b is not None
    assert a.blocks[:2] == b.blocks[:2] and a.blocks[2] != b.blocks[2]
    assert [kv.ref_counts[x] for x in a.blocks] == [2, 2, 1]
    kv.free(a)
    assert [kv.ref_counts[x] for x in b.blocks] == [1, 1, 1]
    kv.free(b)
    assert kv.ref_counts == [0] * 8 and kv.num_free_blocks == 8 and kv.usage == 0.0
    # Unreferenced but still cached: a third request hits both blocks.
    assert len(first_blocks(kv, prompt)) == 2


def test_freed_blocks_queue_tail_first_and_are_evicted_in_lru_order() -> None:
    kv = pool(6)
    a_tokens, b_tokens = list(range(12)), list(range(100, 112))
    a = admit(kv, a_tokens)
    b = admit(kv, b_tokens)
    assert a is not None and b is not None
    assert a.blocks == [0, 1, 2] and b.blocks == [3, 4, 5]
    kv.free(a)  # a first: a's blocks are the least recently used
    kv.free(b)
    assert kv.free_queue() == [2, 1, 0, 5, 4, 3]
    # One fresh block evicts a's deepest block (2); a's first two blocks still hit.
    c = BlockTable()
    assert kv.allocate_slots(c, 1) and c.blocks == [2]
    assert kv.block_hash(2) is None
    assert first_blocks(kv, a_tokens) == [0, 1]
    # Two more evict 1 then 0: a's prefix is gone, b's is intact.
    assert kv.allocate_slots(c, 9) and c.blocks == [2, 1, 0]
    assert first_blocks(kv, a_tokens) == []
    assert first_blocks(kv, b_tokens) == [3, 4, 5]


def test_a_hit_revives_a_free_block_and_counts_it_against_free_space() -> None:
    kv = pool(4)
    prompt = list(range(9))
    a = admit(kv, prompt)
    assert a is not None
    kv.free(a)  # blocks 0,1 cached; all 4 free
    filler = BlockTable()
    assert kv.allocate_slots(filler, 4)  # the never-used block 3 is at the front
    assert filler.blocks == [3] and kv.free_queue() == [2, 1, 0]
    hits = first_blocks(kv, prompt)
    assert hits == [0, 1]
    # Reviving 2 hit blocks + 2 fresh blocks needs 4 free; only 3: refused, nothing changed.
    table = BlockTable()
    assert not kv.allocate_slots(table, 16, hits)
    assert kv.free_queue() == [2, 1, 0] and table.blocks == []
    # 2 hits + 1 fresh fits; the hits leave the free queue, the fresh one is a's old partial block.
    assert kv.allocate_slots(table, 12, hits)
    assert table.blocks == [0, 1, 2] and table.num_cached == 2
    assert kv.free_queue() == [] and [kv.ref_counts[x] for x in table.blocks] == [1, 1, 1]


def test_duplicate_content_is_not_registered_twice() -> None:
    kv = pool(8)
    prompt = list(range(4))
    a, b = BlockTable(), BlockTable()
    hashes = hash_token_blocks(prompt, BS)
    # Both computed without hits (as two requests prefilled in the same step).
    assert kv.allocate_slots(a, 4) and kv.allocate_slots(b, 4)
    kv.cache_full_blocks(a, hashes, 4)
    kv.cache_full_blocks(b, hashes, 4)
    assert kv.block_hash(a.blocks[0]) == hashes[0] and kv.block_hash(b.blocks[0]) is None
    assert kv.stats().num_cached_blocks == 1


def test_prefix_caching_off_never_hits() -> None:
    kv = pool(8, caching=False)
    prompt = list(range(9))
    a = admit(kv, prompt)
    assert a is not None
    kv.free(a)
    assert first_blocks(kv, prompt) == []
    assert kv.stats().num_cached_blocks == 0


def test_prefix_stats_accumulate() -> None:
    kv = pool(8)
    kv.record_prefix_query(10, 8)
    kv.record_prefix_query(5, 0)
    s = kv.stats()
    assert (s.prefix_queries, s.prefix_hits, s.num_blocks, s.num_free_blocks) == (15, 8, 8, 8)


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        KVCacheManager(0)
    with pytest.raises(ValueError):
        KVCacheManager(4, block_size=0)
