"""The consistent-hash ring behind session affinity (autellix/proxy/routing/hash_ring.py)."""

from __future__ import annotations

import pytest

from autellix.proxy.routing import HashRing

PROGRAMS = [f"program-{i}" for i in range(2000)]


def owners(ring: HashRing, engines: list[str]) -> dict[str, str]:
    return {program: ring.owner(program, engines) for program in PROGRAMS}


def test_owner_depends_on_the_engine_set_not_its_order() -> None:
    engines = ["a", "b", "c", "d"]
    assert owners(HashRing(), engines) == owners(HashRing(), list(reversed(engines)))


def test_removing_an_engine_moves_only_its_programs() -> None:
    ring = HashRing()
    before = owners(ring, ["a", "b", "c", "d"])
    after = owners(ring, ["a", "b", "d"])
    moved = {p for p in PROGRAMS if before[p] != after[p]}
    assert moved == {p for p in PROGRAMS if before[p] == "c"}
    assert owners(ring, ["a", "b", "c", "d"]) == before  # and they come back when it returns


def test_adding_an_engine_moves_programs_only_to_it_and_about_a_fair_share() -> None:
    ring = HashRing()
    before = owners(ring, ["a", "b", "c", "d"])
    after = owners(ring, ["a", "b", "c", "d", "e"])
    moved = [p for p in PROGRAMS if before[p] != after[p]]
    assert all(after[p] == "e" for p in moved)
    assert 0.12 < len(moved) / len(PROGRAMS) < 0.28  # ideal 1/5


def test_shares_are_even_with_virtual_nodes() -> None:
    result = owners(HashRing(vnodes=100), ["a", "b", "c", "d"])
    shares = [list(result.values()).count(engine) / len(PROGRAMS) for engine in "abcd"]
    assert all(0.17 < share < 0.33 for share in shares), shares


def test_invalid_rings() -> None:
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(vnodes=0)
    with pytest.raises(ValueError, match="at least one engine"):
        HashRing().owner("p", [])
