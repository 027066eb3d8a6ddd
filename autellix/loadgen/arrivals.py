"""Program arrivals and the one-call entry point that builds a workload (reference.md §2).

The paper samples programs at random and lets them arrive as a Poisson process of rate lambda
(programs/s); its offline batch experiment puts every program at t = 0.

1. Poisson: inter-arrival gaps are exponential with mean 1/lambda, the first one included, so
   program k arrives at the sum of k+1 gaps (a stationary process observed from t = start).
2. Offline (``rate=None``): every program arrives at ``start``.
3. Reproducibility: ``make_workload`` derives two generators from the seed, one for the programs'
   content and one for the arrival times, so the same seed gives the same programs at any rate,
   and the same (name, n, rate, seed, params) gives a byte-identical trace.
"""

from __future__ import annotations

import dataclasses
import math
import random

from autellix.loadgen.program import ProgramSpec
from autellix.loadgen.workloads import get_workload

__all__ = ["make_workload", "offline_arrivals", "poisson_arrivals", "with_arrivals"]


def poisson_arrivals(rng: random.Random, n: int, rate: float, start: float = 0.0) -> list[float]:
    """``n`` arrival times of a Poisson process of ``rate`` events/s, after ``start``."""
    if not (math.isfinite(rate) and rate > 0.0):
        raise ValueError(f"arrival rate must be a finite number > 0, got {rate}")
    times: list[float] = []
    now = start
    for _ in range(n):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def offline_arrivals(n: int, start: float = 0.0) -> list[float]:
    """Everything at once: the offline batch setting."""
    return [start] * n


def with_arrivals(programs: list[ProgramSpec], times: list[float]) -> list[ProgramSpec]:
    """The programs, in order, given the arrival times (same length)."""
    if len(programs) != len(times):
        raise ValueError(f"{len(programs)} programs but {len(times)} arrival times")
    return [dataclasses.replace(p, arrival_time=t) for p, t in zip(programs, times, strict=True)]


def make_workload(
    name: str,
    n_programs: int,
    rate: float | None,
    seed: int,
    params: object | None = None,
    start: float = 0.0,
) -> list[ProgramSpec]:
    """``n_programs`` programs of workload ``name`` arriving at ``rate`` programs/s (None: offline).

    ``params`` is the workload's ``Params`` (default: its defaults). Program ids are
    ``{name}-s{seed}-{i:05d}``; programs come in arrival order.
    """
    workload = get_workload(name)
    if params is None:
        params = workload.params_type()
    elif not isinstance(params, workload.params_type):
        raise TypeError(
            f"workload {name!r} takes {workload.params_type.__module__}.Params, got {type(params)!r}"
        )
    content = random.Random(f"{seed}:{name}:programs")
    programs = workload.generate(content, params, n_programs, f"{name}-s{seed}")
    if rate is None:
        times = offline_arrivals(n_programs, start)
    else:
        times = poisson_arrivals(random.Random(f"{seed}:arrivals"), n_programs, rate, start)
    return with_arrivals(programs, times)
