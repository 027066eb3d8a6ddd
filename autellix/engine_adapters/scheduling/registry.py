"""Queue policies by name: a registration decorator, a lookup, and YAML/dict parameters → ``Params``.

Rules:

1. A policy is a :class:`~.base.QueuePolicy` subclass in its own module, decorated with
   ``@register_policy("name")``; it has a nested frozen ``Params`` dataclass and a constructor
   ``__init__(self, params: Params | None = None)``. Adding a policy never edits this file.
2. The table below is written only by the decorator, at import time of the policy modules (the package's
   ``__init__`` imports them all); after that it is read-only. A name registered twice is an error.
3. Parameters come as ``None`` (defaults), a ``Params`` instance, or a mapping (from YAML or JSON).
   A mapping is checked key by key: an unknown key is a ValueError that names the valid keys; YAML
   lists become tuples, integers become floats where a float is expected, ``"inf"`` is accepted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .base import QueuePolicy

P = TypeVar("P", bound=type[QueuePolicy])

_POLICIES: dict[str, type[QueuePolicy]] = {}


def register_policy(name: str) -> Callable[[P], P]:
    """Class decorator: make the policy available to :func:`get_policy` under ``name``."""

    def decorate(cls: P) -> P:
        if name in _POLICIES and _POLICIES[name] is not cls:
            raise ValueError(f"queue policy {name!r} is registered twice")
        if not dataclasses.is_dataclass(getattr(cls, "Params", None)):
            raise TypeError(f"queue policy {name!r} needs a nested Params dataclass")
        cls.name = name
        _POLICIES[name] = cls
        return cls

    return decorate


def policy_names() -> tuple[str, ...]:
    """Registered policy names, sorted."""
    return tuple(sorted(_POLICIES))


def policy_class(name: str) -> type[QueuePolicy]:
    try:
        return _POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown queue policy {name!r}; known: {', '.join(policy_names())}") from None


def get_policy(name: str, params: object = None) -> QueuePolicy:
    """A fresh policy instance; ``params`` is None, the policy's ``Params`` or a mapping of its fields."""
    cls = policy_class(name)
    built = build_params(cls.Params, params, what=f"queue policy {name!r}")
    factory: Callable[[Any], QueuePolicy] = cls
    return factory(built)


def build_params(params_type: type[Any], values: object, what: str = "parameters") -> Any:
    """``values`` (None, an instance, or a mapping of field names) → an instance of ``params_type``."""
    if values is None:
        return params_type()
    if isinstance(values, params_type):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(f"{what}: parameters must be a mapping, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(params_type)]
    unknown = sorted(str(key) for key in values if key not in names)
    if unknown:
        valid = ", ".join(names) if names else "(none)"
        raise ValueError(f"{what}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    hints = typing.get_type_hints(params_type)
    kwargs = {key: _coerce(value, hints[key], f"{what}: {key}") for key, value in values.items()}
    try:
        return params_type(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _coerce(value: object, hint: Any, what: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [option for option in options if option is not type(None)]
        origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{what} must be a list, got {value!r}")
        (item,) = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
        return tuple(_coerce(v, item, what) for v in value)
    if hint is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf", "infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {value!r}")
        return value
    return value
