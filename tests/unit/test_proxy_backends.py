"""Which backends a call may use (backends.py rule 3) and the models the proxy lists."""

from __future__ import annotations

from typing import cast

import aiohttp

from autellix.proxy.backends import BackendPool


def pool_with(models: dict[str, list[str]]) -> BackendPool:
    pool = BackendPool([(name, f"http://{name}:1") for name in models], cast(aiohttp.ClientSession, None))
    for backend in pool.backends:
        backend.models = {
            model: {"id": model, "owned_by": backend.engine_id} for model in models[backend.engine_id]
        }
    return pool


def ids(backends) -> list[str]:
    return [backend.engine_id for backend in backends]


def test_a_model_goes_to_the_backends_that_list_it_in_fleet_order() -> None:
    pool = pool_with({"a": ["m", "n"], "b": ["n"], "c": ["m"]})
    assert ids(pool.serving("m")) == ["a", "c"]
    assert ids(pool.serving("n")) == ["a", "b"]
    assert ids(pool.serving(None)) == ["a", "b", "c"]


def test_an_unknown_model_is_none_once_any_list_is_known() -> None:
    assert pool_with({"a": ["m"], "b": []}).serving("x") is None
    assert ids(pool_with({"a": [], "b": []}).serving("x")) == ["a", "b"]  # nothing known yet: engines decide


def test_model_cards_are_the_union_with_the_first_backends_card() -> None:
    cards = pool_with({"a": ["n"], "b": ["m", "n"]}).model_cards()
    assert [(card["id"], card["owned_by"]) for card in cards] == [("m", "b"), ("n", "a")]


def test_mark_down_only_changes_a_healthy_backend() -> None:
    changes: list[tuple[str, bool]] = []
    pool = BackendPool(
        [("a", "http://a:1")],
        cast(aiohttp.ClientSession, None),
        on_change=lambda b: changes.append((b.engine_id, b.healthy)),
    )
    pool.mark_down("a", "refused")
    assert changes == []  # never healthy yet
    pool.backends[0].healthy = True
    pool.mark_down("a", "refused")
    pool.mark_down("missing", "refused")
    assert changes == [("a", False)] and not pool.any_healthy
