"""Mixed: equal sampling of ShareGPT, BFCL and LATS programs (reference.md §2, the paper's Mixed).

1. A batch is an exactly balanced mix: positions are dealt in blocks of one program per component,
   each block in a random order, so n programs hold ``n // 3`` or ``n // 3 + 1`` of each component
   and the kinds are interleaved through the arrival sequence (not clustered).
2. Each component's programs are generated as one stratified batch of that component (base.py
   rule 3) from its own generator, so the sharegpt programs of a mixed run have the same
   statistics as a sharegpt run of that size.
3. A program keeps its component's name in ``ProgramSpec.workload`` (so results can be split by
   kind); its id follows the mixed batch's prefix and position.
4. ``generate_program`` alone picks a component from its quantile (uniformly).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from autellix.loadgen.program import ProgramSpec
from autellix.loadgen.workloads import bfcl, lats, sharegpt
from autellix.loadgen.workloads.base import WorkloadDef, generate_programs

__all__ = ["WORKLOAD", "Params", "generate_batch", "generate_program"]

NAME = "mixed"


@dataclass(frozen=True, slots=True)
class Params:
    sharegpt: sharegpt.Params = field(default_factory=sharegpt.Params)
    bfcl: bfcl.Params = field(default_factory=bfcl.Params)
    lats: lats.Params = field(default_factory=lats.Params)
    components: tuple[str, ...] = ("sharegpt", "bfcl", "lats")

    def __post_init__(self) -> None:
        unknown = set(self.components) - {"sharegpt", "bfcl", "lats"}
        if not self.components or unknown:
            raise ValueError(f"mixed components must be among sharegpt, bfcl, lats; got {self.components}")


def _component(params: Params, name: str) -> tuple[WorkloadDef[Any], object]:
    table: dict[str, tuple[WorkloadDef[Any], object]] = {
        "sharegpt": (sharegpt.WORKLOAD, params.sharegpt),
        "bfcl": (bfcl.WORKLOAD, params.bfcl),
        "lats": (lats.WORKLOAD, params.lats),
    }
    return table[name]


def generate_program(
    rng: random.Random, params: Params, program_id: str, quantile: float | None = None
) -> ProgramSpec:
    q = rng.random() if quantile is None else quantile
    name = params.components[min(int(q * len(params.components)), len(params.components) - 1)]
    workload, component_params = _component(params, name)
    return workload.generate_program(rng, component_params, program_id, None)


def generate_batch(rng: random.Random, params: Params, n_programs: int, id_prefix: str) -> list[ProgramSpec]:
    if n_programs < 0:
        raise ValueError(f"n_programs must be >= 0, got {n_programs}")
    names = params.components
    assignment: list[str] = []
    while len(assignment) < n_programs:
        block = list(names)
        rng.shuffle(block)
        assignment.extend(block)
    assignment = assignment[:n_programs]
    seeds = {name: rng.getrandbits(64) for name in names}
    programs: list[ProgramSpec | None] = [None] * n_programs
    for name in names:
        positions = [i for i, assigned in enumerate(assignment) if assigned == name]
        workload, component_params = _component(params, name)
        ids = [f"{id_prefix}-{i:05d}" for i in positions]
        batch = generate_programs(
            workload.generate_program, random.Random(seeds[name]), component_params, len(positions), "", ids
        )
        for position, program in zip(positions, batch, strict=True):
            programs[position] = program
    return [p for p in programs if p is not None]


WORKLOAD: WorkloadDef[Params] = WorkloadDef(
    name=NAME,
    params_type=Params,
    generate_program=generate_program,
    description="equal mix of sharegpt, bfcl and lats programs, interleaved",
    generate_batch=generate_batch,
)
