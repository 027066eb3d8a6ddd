"""Building routers from names, mappings and YAML; every config mistake is a clear ValueError."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from autellix.proxy.routing import (
    AutellixRouter,
    EngineView,
    RouteDecision,
    RouterConfig,
    RouteRequest,
    RoutingPolicy,
    get_router,
    register_router,
    router_names,
)


def test_router_names_are_sorted() -> None:
    assert list(router_names()) == sorted(router_names())


def test_get_router_by_name_mapping_and_config() -> None:
    assert isinstance(get_router("autellix"), AutellixRouter)
    router = get_router(
        {"name": "autellix", "params": {"short_call_max_tokens": 512}, "weights": {"pinned": 3}}
    )
    assert isinstance(router, AutellixRouter)
    assert router.params.short_call_max_tokens == 512
    assert dict(router.weights) == {"pinned": 3.0, "load": 1.0}
    assert get_router(RouterConfig("least_used")).name == "least_used"


def test_router_config_from_yaml() -> None:
    text = """
name: prefix_affinity
params:
  cache_threshold: 0.5
  balance_abs_threshold: 16
  balance_rel_threshold: 2
"""
    router = get_router(RouterConfig.from_yaml(text))
    params = router.params
    assert (params.cache_threshold, params.balance_abs_threshold, params.balance_rel_threshold) == (
        0.5,
        16,
        2.0,
    )
    assert isinstance(params.balance_rel_threshold, float)  # an int is accepted where a float is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fastest", "unknown router 'fastest'; known: autellix, "),
        ({"name": "autellix", "param": {}}, "unknown key(s) param; valid: name, params, weights"),
        ({"params": {}}, "'name' must be a non-empty string"),
        ({"name": "autellix", "params": [1]}, "'params' must be a mapping"),
        (
            {"name": "autellix", "params": {"threshold": 1}},
            "unknown parameter(s) threshold; valid: short_call_max",
        ),
        ({"name": "autellix", "params": {"short_call_max_tokens": "big"}}, "must be an integer, got 'big'"),
        ({"name": "autellix", "params": {"short_call_max_tokens": True}}, "must be an integer"),
        ({"name": "autellix", "params": {"short_call_max_tokens": -1}}, "short_call_max_tokens must be >= 0"),
        (
            {"name": "autellix", "weights": {"affinity": 1}},
            "unknown scorer weight 'affinity'; valid: load, pinned",
        ),
        ({"name": "autellix", "weights": {"load": -1}}, "must be finite and >= 0"),
        ({"name": "autellix", "weights": {"load": "x"}}, "must be a number"),
        ({"name": "autellix", "weights": {"pinned": 1, "load": 1}}, "must exceed weight 'load'"),
        ({"name": "least_used", "weights": {"kv_usage": 1}}, "unknown scorer weight 'kv_usage'; valid: load"),
        ({"name": "round_robin", "weights": {"load": 1}}, "no weighted scorers"),
        ({"name": "weighted", "weights": {"load": 0}}, "at least one weight must be positive"),
        ({"name": "prefix_affinity", "params": {"cache_threshold": 1.5}}, "cache_threshold must be within"),
        ({"name": "session_affinity", "params": {"vnodes": 0}}, "vnodes must be >= 1"),
        ({"name": "random", "params": {"seed": 1.5}}, "must be an integer"),
        (42, "a router config must be a name or a mapping"),
    ],
)
def test_config_mistakes_are_clear_value_errors(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        get_router(spec)
    assert message in str(raised.value)


def test_invalid_yaml_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid YAML"):
        RouterConfig.from_yaml("name: [unclosed")


def test_an_rng_given_overrides_the_params_seed() -> None:
    engines = [EngineView(f"e{i}") for i in range(16)]

    def draws(router_rng: random.Random | None, seed: int) -> list[str]:
        router = get_router({"name": "random", "params": {"seed": seed}}, rng=router_rng)
        return [router.route(RouteRequest("p"), engines).engine_id for _ in range(20)]

    assert draws(None, 1) == draws(None, 1)
    assert draws(None, 1) != draws(None, 2)
    assert draws(random.Random(5), 1) == draws(random.Random(5), 2)


def test_a_name_registered_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @register_router("least_used")
        class Impostor(RoutingPolicy):
            @dataclass(frozen=True)
            class Params:
                pass

            def route(self, request: RouteRequest, engines: Any) -> RouteDecision:
                raise NotImplementedError


def test_a_router_without_params_is_rejected() -> None:
    with pytest.raises(TypeError, match="needs a nested Params dataclass"):

        @register_router("no_params_router")
        class NoParams(RoutingPolicy):
            def route(self, request: RouteRequest, engines: Any) -> RouteDecision:
                raise NotImplementedError

    assert "no_params_router" not in router_names()
