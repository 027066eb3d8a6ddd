"""Routers by name: a registration decorator, and a router built from a name or a config mapping.

Rules:

1. A router is a :class:`~.policy.RoutingPolicy` subclass in its own module, decorated with
   ``@register_router("name")``, with a nested frozen ``Params`` dataclass and the constructor
   ``__init__(self, params=None, *, weights=None, rng=None)``. Adding one never edits this file.
2. The table below is written only by the decorator while the package imports its policy modules;
   afterwards it is read-only. Registering a name twice is an error.
3. A config is a name, or a mapping ``{"name": ..., "params": {...}, "weights": {...}}`` (from YAML
   or JSON). Every key is checked: an unknown router, config key, parameter or weight is a ValueError
   that lists the valid ones; numbers are type-checked (an int is accepted where a float is expected).
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from .policy import RoutingPolicy

R = TypeVar("R", bound=type[RoutingPolicy])

_ROUTERS: dict[str, type[RoutingPolicy]] = {}
_CONFIG_KEYS = ("name", "params", "weights")


def register_router(name: str) -> Callable[[R], R]:
    """Class decorator: make the policy available to :func:`get_router` under ``name``."""

    def decorate(cls: R) -> R:
        if name in _ROUTERS and _ROUTERS[name] is not cls:
            raise ValueError(f"router {name!r} is registered twice")
        if not dataclasses.is_dataclass(getattr(cls, "Params", None)):
            raise TypeError(f"router {name!r} needs a nested Params dataclass")
        cls.name = name
        _ROUTERS[name] = cls
        return cls

    return decorate


def router_names() -> tuple[str, ...]:
    """Registered router names, sorted."""
    return tuple(sorted(_ROUTERS))


def router_class(name: str) -> type[RoutingPolicy]:
    try:
        return _ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(router_names())}") from None


@dataclass(frozen=True, slots=True)
class RouterConfig:
    name: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | RouterConfig) -> RouterConfig:
        if isinstance(spec, RouterConfig):
            return spec
        if isinstance(spec, str):
            return cls(name=spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"a router config must be a name or a mapping, got {type(spec).__name__}")
        unknown = sorted(str(key) for key in spec if key not in _CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"router config: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_CONFIG_KEYS)}"
            )
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"router config: 'name' must be a non-empty string, got {name!r}")
        params = spec.get("params") or {}
        weights = spec.get("weights") or {}
        for key, value in (("params", params), ("weights", weights)):
            if not isinstance(value, Mapping):
                raise ValueError(f"router config: {key!r} must be a mapping, got {type(value).__name__}")
        return cls(name=name, params=MappingProxyType(dict(params)), weights=MappingProxyType(dict(weights)))

    @classmethod
    def from_yaml(cls, text: str) -> RouterConfig:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"router config: not valid YAML ({exc})") from None
        return cls.parse(loaded)


def get_router(
    spec: str | Mapping[str, Any] | RouterConfig, *, rng: random.Random | None = None
) -> RoutingPolicy:
    """A fresh router. ``rng`` overrides the seed a random policy would otherwise take from its params."""
    config = RouterConfig.parse(spec)
    cls = router_class(config.name)
    params = build_params(cls.Params, config.params, what=f"router {config.name!r}")
    factory: Callable[..., RoutingPolicy] = cls
    return factory(params, weights=config.weights, rng=rng)


def build_params(params_type: type[Any], values: Mapping[str, Any], what: str) -> Any:
    names = [f.name for f in dataclasses.fields(params_type)]
    unknown = sorted(str(key) for key in values if key not in names)
    if unknown:
        raise ValueError(
            f"{what}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(names) or '(none)'}"
        )
    hints = typing.get_type_hints(params_type)
    kwargs = {key: _checked(value, hints[key], f"{what}: parameter {key!r}") for key, value in values.items()}
    try:
        return params_type(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _checked(value: object, hint: Any, what: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            hint = options[0]
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} must be a number, got {value!r}")
        return float(value)
    elif hint is str and not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value
