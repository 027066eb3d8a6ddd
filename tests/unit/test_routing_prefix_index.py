"""The approximate prefix tree behind prefix affinity (autellix/proxy/routing/prefix_index.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.routing import EngineView, PrefixIndex


def index(capacity: int = 1000) -> PrefixIndex:
    return PrefixIndex(block_chars=4, block_tokens=2, max_blocks_per_engine=capacity)


def test_block_keys_chain_full_blocks_only() -> None:
    idx = index()
    assert idx.block_keys("abc") == []
    keys = idx.block_keys("aaaabbbbcc")
    assert len(keys) == 2  # the trailing "cc" is a partial block
    assert idx.block_keys("aaaabbbbzzzz")[:2] == keys  # equal prefixes, equal keys
    assert idx.block_keys("xaaabbbb")[1] != keys[1]  # a key names its whole prefix, not its block
    assert len(idx.block_keys((1, 2, 3, 4, 5))) == 2  # token ids use block_tokens


def test_match_counts_leading_blocks_per_engine() -> None:
    idx = index()
    idx.insert("e0", idx.block_keys("aaaabbbbcccc"))
    idx.insert("e1", idx.block_keys("aaaabbbbdddd"))
    idx.insert("e2", idx.block_keys("zzzz"))
    assert idx.match(idx.block_keys("aaaabbbbcccceeee")) == {"e0": 3, "e1": 2}
    assert idx.match(idx.block_keys("aaaaxxxx")) == {"e0": 1, "e1": 1}
    assert idx.match(idx.block_keys("qqqq")) == {}
    assert idx.sizes(["e0", "e1", "e2", "e9"]) == [3, 3, 1, 0]


def test_eviction_is_lru_and_removes_leaves_before_their_parents() -> None:
    idx = index(capacity=4)
    idx.insert("e0", idx.block_keys("aaaabbbbcccc"))  # 3 blocks
    idx.insert("e0", idx.block_keys("xxxxyyyy"))  # 2 more: the oldest leaf "cccc" goes first
    assert idx.size("e0") == 4
    assert idx.match(idx.block_keys("aaaabbbbcccc")) == {"e0": 2}
    idx.insert("e0", idx.block_keys("aaaa"))  # a touch only: nothing new, nothing evicted
    assert idx.match(idx.block_keys("aaaabbbb")) == {"e0": 2}
    idx.insert("e0", idx.block_keys("zzzz"))  # one new block: the least recent is "bbbb", a leaf
    assert idx.match(idx.block_keys("aaaabbbb")) == {"e0": 1}
    assert idx.match(idx.block_keys("xxxxyyyy")) == {"e0": 2}
    assert idx.size("e0") == 4


def test_prune_forgets_engines_that_left_the_fleet() -> None:
    idx = index()
    idx.insert("e0", idx.block_keys("aaaabbbb"))
    idx.insert("gone", idx.block_keys("aaaacccc"))
    idx.prune([EngineView("e0"), EngineView("new")])  # same count: nothing to do yet
    assert idx.engines() == ("e0", "gone")
    idx.prune([EngineView("e0", healthy=False)])  # unhealthy engines keep their trees
    assert idx.engines() == ("e0",)
    assert idx.total_keys() == 2
    assert idx.match(idx.block_keys("aaaacccc")) == {"e0": 1}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12))
def test_trees_stay_bounded_and_closed_under_ancestors(seed: int, capacity: int) -> None:
    rng = random.Random(seed)
    idx = index(capacity)
    engines = ["e0", "e1", "e2"]
    prompts = ["".join(rng.choice("ab") * 4 for _ in range(rng.randrange(1, 8))) for _ in range(30)]
    for prompt in prompts:
        idx.insert(rng.choice(engines), idx.block_keys(prompt))
        for engine in engines:
            assert idx.size(engine) <= capacity
    for prompt in prompts:
        keys = idx.block_keys(prompt)
        depths = idx.match(keys)
        for engine in engines:
            held = [key in idx._lru.get(engine, {}) for key in keys]
            # each engine holds a leading run of the prompt's blocks and nothing past it
            depth = depths.get(engine, 0)
            assert held == [True] * depth + [False] * (len(keys) - depth)
