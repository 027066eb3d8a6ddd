"""The engine adapter interface: what differs between engine kinds, as pure functions (DESIGN.md §2).

Theory of operation
-------------------
The sidecar shell does all IO; an adapter only *interprets* and *rewrites*. One engine kind is one
module ``autellix/engine_adapters/<kind>.py`` with one ``@register_adapter("<kind>")`` class, found by
name on first use (no list of kinds to edit). An adapter answers:

1. Where to read load (``load_paths``, tried in order; a 404 moves to the next) and how to turn the
   reply into an :class:`~.admission.EngineLoad` (``parse_load``; :class:`LoadProbeError` if unusable).
2. Whether the engine runs a priority policy and in which direction (``server_info_path`` +
   ``detect_priority``; None when the engine cannot tell). :func:`resolve_priority` then combines it
   with the operator's ``auto|on|off``: priority is sent only when switched on or positively detected,
   never to an engine that is, or may be, FCFS (reference.md §6: rejected or ignored by version).
3. How our queue level becomes the engine's ``priority`` value (``engine_priority``): level 0 is served
   first, so an engine that serves low values first gets the level itself and one that serves high
   values first gets ``num_levels - 1 - level``. Inside one level the engine's own tie-break (arrival)
   keeps our FIFO order, because we admit in that order.
4. How the request body changes (``rewrite_body``): ``priority`` when given, and removed when not
   (a caller's own value must not reorder the engine's queue: the proxy strips it too, this covers
   callers that reach the sidecar otherwise), and for streams ``stream_options.include_usage`` so that
   we can count tokens; everything else passes unchanged.
5. How usage and engine-side timing are read from a response or stream chunk (``read_usage``).
6. Whether a streamed call can be stopped and resumed from a token-id prompt (``supports_resume``:
   the engine takes ``prompt`` as token ids on ``/v1/completions`` and returns them with
   ``return_token_ids``; relay.py rule 6).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from autellix.engine_adapters.accounting import Usage, usage_from_payload
from autellix.engine_adapters.admission import EngineLoad

PriorityMode = Literal["auto", "on", "off"]


class LoadProbeError(ValueError):
    """A load probe reply the adapter cannot read."""


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    """Operator settings an adapter may need."""

    low_priority_values_first: bool | None = None  # None: the engine's documented default


@dataclass(frozen=True, slots=True)
class PrioritySupport:
    """What an engine said about its scheduling policy."""

    enabled: bool
    low_values_first: bool | None = None  # None: not reported


@dataclass(frozen=True, slots=True)
class PriorityDecision:
    """Whether the sidecar sends ``priority``, in which direction, and why."""

    enabled: bool
    low_values_first: bool
    reason: str


class EngineAdapter(ABC):
    """How to talk to one engine kind (rules in the module docstring)."""

    kind: ClassVar[str] = ""  # set by the registration decorator
    load_paths: ClassVar[tuple[str, ...]] = ("/metrics",)
    health_path: ClassVar[str] = "/health"
    server_info_path: ClassVar[str | None] = None
    default_low_values_first: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = False  # rule 6

    def __init__(self, options: AdapterOptions | None = None) -> None:
        self.options = options if options is not None else AdapterOptions()

    @abstractmethod
    def parse_load(self, path: str, text: str) -> EngineLoad:
        """The load in a 200 reply to ``GET path``; LoadProbeError if it holds none."""

    def detect_priority(self, status: int, text: str) -> PrioritySupport | None:
        """What the reply to ``GET server_info_path`` says about priority scheduling; None: unknown."""
        return None

    def low_values_first(self, detected: PrioritySupport | None = None) -> bool:
        """Direction of the engine's priority: the operator's setting, else detected, else default."""
        if self.options.low_priority_values_first is not None:
            return self.options.low_priority_values_first
        if detected is not None and detected.low_values_first is not None:
            return detected.low_values_first
        return self.default_low_values_first

    @staticmethod
    def engine_priority(level: int, num_levels: int, low_values_first: bool) -> int:
        """The engine's ``priority`` for a call admitted from queue ``level`` (0 = served first)."""
        level = min(max(level, 0), max(num_levels - 1, 0))
        return level if low_values_first else max(num_levels - 1, 0) - level

    def rewrite_body(
        self, body: Mapping[str, Any], *, priority: int | None, want_usage: bool
    ) -> dict[str, Any] | None:
        """The body to send, or None when it goes unchanged (the raw bytes are then forwarded)."""
        changes: dict[str, Any] = {}
        if priority is not None and body.get("priority") != priority:
            changes["priority"] = priority
        if want_usage:
            options = body.get("stream_options")
            if not isinstance(options, Mapping):
                changes["stream_options"] = {"include_usage": True}
            elif options.get("include_usage") is not True:
                changes["stream_options"] = {**options, "include_usage": True}
        dropped = priority is None and "priority" in body
        if not changes and not dropped:
            return None
        out = {**body, **changes}
        if dropped:
            del out["priority"]
        return out

    def read_usage(self, payload: Mapping[str, Any]) -> Usage | None:
        """Usage of a response body or a stream chunk; None if it carries none."""
        return usage_from_payload(payload)


A = TypeVar("A", bound=type[EngineAdapter])

_ADAPTERS: dict[str, type[EngineAdapter]] = {}
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
BUILTIN_KINDS = ("sglang", "sim", "vllm")


def register_adapter(kind: str) -> Callable[[A], A]:
    """Class decorator: make an adapter available to :func:`get_adapter` under ``kind``."""

    def decorate(cls: A) -> A:
        if kind in _ADAPTERS and _ADAPTERS[kind] is not cls:
            raise ValueError(f"engine adapter {kind!r} is registered twice")
        cls.kind = kind
        _ADAPTERS[kind] = cls
        return cls

    return decorate


def adapter_class(kind: str) -> type[EngineAdapter]:
    """The adapter registered as ``kind``, importing ``autellix.engine_adapters.<kind>`` on first use."""
    if kind not in _ADAPTERS and _KIND.match(kind):
        module = f"autellix.engine_adapters.{kind}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the adapter exists but something it imports does not: say so
                raise
    try:
        return _ADAPTERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown engine kind {kind!r}; built in: {', '.join(BUILTIN_KINDS)} (a new kind is a module "
            "autellix/engine_adapters/<kind>.py with a @register_adapter class)"
        ) from None


def get_adapter(kind: str, options: AdapterOptions | None = None) -> EngineAdapter:
    factory: Callable[[AdapterOptions | None], EngineAdapter] = adapter_class(kind)
    return factory(options)


def resolve_priority(
    mode: PriorityMode, adapter: EngineAdapter, detected: PrioritySupport | None
) -> PriorityDecision:
    """Send ``priority`` only when switched on, or in ``auto`` when the engine said it runs priority."""
    low_first = adapter.low_values_first(detected)
    if mode == "on":
        return PriorityDecision(True, low_first, "switched on by the operator")
    if mode == "off":
        return PriorityDecision(False, low_first, "switched off by the operator")
    if detected is None:
        return PriorityDecision(False, low_first, "engine policy unknown: treated as FCFS")
    if detected.enabled:
        return PriorityDecision(True, low_first, "engine reports a priority policy")
    return PriorityDecision(False, low_first, "engine reports FCFS")


# ----- helpers shared by adapters ----------------------------------------------------------------------


def scan_prometheus(text: str, names: Iterable[str]) -> dict[str, list[float]]:
    """Sample values of the wanted metric names in Prometheus text format (every label set)."""
    wanted = set(names)
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        if space < 0:
            continue
        end = brace if 0 <= brace < space else space
        name = line[:end]
        if name not in wanted:
            continue
        rest = line[line.rfind("}") + 1 :] if end == brace else line[space:]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            found.setdefault(name, []).append(value)
    return found


def first_present(samples: Mapping[str, list[float]], *names: str) -> list[float] | None:
    for name in names:
        if name in samples:
            return samples[name]
    return None


def load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadProbeError(f"{what} is not JSON: {exc}") from exc


def find_key(data: Any, key: str, depth: int = 4) -> Any:
    """The value under ``key`` in nested mappings (breadth first, at most ``depth`` levels)."""
    level = [data]
    for _ in range(depth):
        following: list[Any] = []
        for item in level:
            if isinstance(item, Mapping):
                if key in item:
                    return item[key]
                following.extend(item.values())
        level = following
    return None
