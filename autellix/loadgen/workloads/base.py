"""What every workload generator shares: its registry entry, tool/think time, length sampling.

A workload is one module with a frozen ``Params`` dataclass, a ``generate_program(rng, params,
program_id, quantile=None)`` that builds one :class:`~autellix.loadgen.program.ProgramSpec`, and a
:class:`WorkloadDef` named ``WORKLOAD`` that the package registry (``workloads/__init__.py``) lists.

Determinism and sampling rules:

1. All randomness comes from the ``random.Random`` passed in; nothing reads module-level random state.
2. ``generate_programs`` draws one 64-bit seed per program from that generator and builds the
   program from its own ``random.Random(seed)``, so how much randomness one program consumes never
   shifts the next one.
3. Stratified primary draw: each workload has one dominant random choice per program (which
   conversation, which BFCL entry, how many tree-search iterations), made from a ``quantile`` in
   [0, 1). A batch of n programs gets the quantiles ``(u + k) / n`` (one random ``u``), shuffled:
   each program's choice still has exactly the workload's distribution, but the batch covers it
   evenly, so a few hundred programs already show the population means (heavy-tailed workloads
   drawn i.i.d. wander by 10-15 % at that size). ``generate_program`` alone draws its quantile.
4. Tool/think delays come from a second generator of the program (:func:`program_rngs`), so switching
   tool time on or off changes delays only, never the program's calls and texts.
"""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from autellix.loadgen.program import ProgramSpec

__all__ = [
    "ToolTime",
    "WorkloadDataError",
    "WorkloadDef",
    "generate_programs",
    "lognormal_tokens",
    "package_data_dir",
    "program_rngs",
]

P = TypeVar("P")

_DELAY_SALT = 0x7F4A_7C15_9E37_79B9  # keeps the delay stream apart from the content stream


@dataclass(frozen=True, slots=True)
class ToolTime:
    """Distribution of the pause before a call that follows a tool result or a user turn.

    ``none`` is the paper's replay (no interception time); ``fixed`` waits ``mean`` seconds;
    ``lognormal`` draws with the given mean and standard deviation (reference.md §5: web search
    ~1.9 s mean, sd 2.1 s; coding agents ~0.9 s mean with a heavy tail).
    """

    kind: str = "none"  # "none", "fixed" or "lognormal"
    mean: float = 0.0  # seconds
    sd: float = 0.0  # seconds; lognormal only

    def __post_init__(self) -> None:
        if self.kind not in ("none", "fixed", "lognormal"):
            raise ValueError(f"tool time kind must be none, fixed or lognormal, got {self.kind!r}")
        if not (math.isfinite(self.mean) and self.mean >= 0.0 and math.isfinite(self.sd) and self.sd >= 0.0):
            raise ValueError("tool time mean and sd must be finite and >= 0")

    @classmethod
    def web_search(cls) -> ToolTime:
        return cls("lognormal", 1.9, 2.1)

    @classmethod
    def coding(cls) -> ToolTime:
        return cls("lognormal", 0.9, 2.0)

    @classmethod
    def fixed(cls, seconds: float) -> ToolTime:
        return cls("fixed", seconds, 0.0)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "none" or self.mean == 0.0:
            return 0.0
        if self.kind == "fixed" or self.sd == 0.0:
            return self.mean
        sigma2 = math.log1p((self.sd / self.mean) ** 2)
        return rng.lognormvariate(math.log(self.mean) - sigma2 / 2.0, math.sqrt(sigma2))


@dataclass(frozen=True, slots=True)
class WorkloadDef(Generic[P]):
    """Registry entry of one workload."""

    name: str
    params_type: type[P]
    generate_program: Callable[[random.Random, P, str, float | None], ProgramSpec]
    description: str
    # A workload whose programs are not independent draws (e.g. an exactly balanced mix) builds the
    # whole batch itself; it receives the same arguments as ``generate``.
    generate_batch: Callable[[random.Random, P, int, str], list[ProgramSpec]] | None = None

    def generate(self, rng: random.Random, params: P, n_programs: int, id_prefix: str) -> list[ProgramSpec]:
        """``n_programs`` programs with ids ``{id_prefix}-{i:05d}``, all arriving at t = 0."""
        if self.generate_batch is not None:
            return self.generate_batch(rng, params, n_programs, id_prefix)
        return generate_programs(self.generate_program, rng, params, n_programs, id_prefix)


def generate_programs(
    make: Callable[[random.Random, Any, str, float | None], ProgramSpec],
    rng: random.Random,
    params: Any,
    n_programs: int,
    id_prefix: str,
    ids: Sequence[str] | None = None,
) -> list[ProgramSpec]:
    """Programs ``{id_prefix}-{i:05d}`` (or the given ``ids``), stratified as rule 3 says."""
    if n_programs < 0:
        raise ValueError(f"n_programs must be >= 0, got {n_programs}")
    if ids is not None and len(ids) != n_programs:
        raise ValueError("ids must hold one id per program")
    names = list(ids) if ids is not None else [f"{id_prefix}-{i:05d}" for i in range(n_programs)]
    seeds = [rng.getrandbits(64) for _ in range(n_programs)]
    offset = rng.random()
    quantiles = [(offset + k) / n_programs for k in range(n_programs)]
    rng.shuffle(quantiles)
    return [
        make(random.Random(seed), params, name, quantile)
        for name, seed, quantile in zip(names, seeds, quantiles, strict=True)
    ]


def program_rngs(rng: random.Random) -> tuple[random.Random, random.Random]:
    """A program's content generator and its (independent) delay generator."""
    seed = rng.getrandbits(64)
    return random.Random(seed), random.Random(seed ^ _DELAY_SALT)


def lognormal_tokens(
    rng: random.Random, mean: float, cv: float, low: int = 1, high: int | None = None
) -> int:
    """A token count from a lognormal with the given mean and coefficient of variation, clipped."""
    if cv <= 0.0:
        value = mean
    else:
        sigma2 = math.log1p(cv * cv)
        value = rng.lognormvariate(math.log(max(mean, 1e-9)) - sigma2 / 2.0, math.sqrt(sigma2))
    count = max(low, round(value))
    return count if high is None else min(high, count)


class WorkloadDataError(FileNotFoundError):
    """The data a workload reads is not installed (or not where it was said to be)."""


def package_data_dir(package: str) -> Path:
    """``<site-packages>/<package>/data``, found without importing (running) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WorkloadDataError(f"package {package!r} is not installed; install it or pass a data path")
    return Path(next(iter(spec.submodule_search_locations))) / "data"
