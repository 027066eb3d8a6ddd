"""Named system presets of the cluster simulation: engine config + queue policy + router + mode.

The baselines and the program-aware systems of the paper's evaluation (arXiv 2502.13965 §6,
reference.md §2), each as one frozen :class:`SystemPreset`:

1. ``vllm``: FCFS engine without prefix caching, round-robin routing, calls go straight into the
   engine (``passthrough``: no queue of ours, no reordering).
2. ``vllm-opt``: the same with prefix caching (chunked prefill is always on in the engine).
3. ``mlfq``: vllm-opt plus a sidecar holding an MLFQ local queue (every new call enters the top level).
4. ``autellix``: a sidecar per engine with the discretised queue placed by PLAS for chain programs and
   ATLAS for DAG programs (per program, from ``ProgramSpec.is_chain``) behind the KV working-set gate
   and the KV budget (engine_adapters/scheduling/working_set.py, scheduler.py), the paper's locality
   router, prefix caching, and the engine's priority policy fed with the queue level (as our sidecar
   does). Variants: ``autellix-resume`` (+ abort-and-resume preemption), ``autellix-fifo`` (the gate in
   program arrival order), ``autellix-las`` (the scheduler as built before the gate: no gate, no KV
   budget), ``autellix-kv`` (autellix-las + the KV budget: an ablation).
5. ``srpt``: clairvoyant shortest remaining work (the program's remaining decode work is known), the
   paper's reference point; routed like autellix so only the queue differs. ``srpt-ws`` puts it behind
   the same gate (ranked by remaining work) and budget: the memory-aware optimum.
   ``continuum``: program-level FCFS with a residency gate that never displaces a program (Continuum,
   arXiv 2511.02230, without its engine patch: residency is accounting, not pinning).
6. ``*-engine`` variants (``mlfq-engine``, ``autellix-engine``, ``srpt-engine``): the queue policy
   picks the batch inside the engine each scheduling round and may preempt running calls, as the
   paper's modified vLLM does (``mode="engine"``; see cluster.py for how it is driven).

Modes: ``passthrough`` (no local queue), ``sidecar`` (our queue admits into an unmodified engine within
an admission window), ``engine`` (engine-integrated scheduling). A preset is data: ``with_router`` and
``dataclasses.replace`` derive variants (``--router`` overrides routing on multi-engine runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from autellix.engine_adapters.scheduler import PreemptParams
from autellix.engine_adapters.scheduling.working_set import WorkingSetParams

__all__ = ["SYSTEMS", "SystemPreset", "get_system", "system_names"]

Mode = Literal["passthrough", "sidecar", "engine"]
# "autellix": the plas queue, placed by PLAS service for chains and ATLAS service for DAGs.
QueueKind = Literal["fcfs", "mlfq", "plas", "atlas", "autellix", "srpt", "program-fcfs"]


@dataclass(frozen=True, slots=True)
class SystemPreset:
    name: str
    description: str
    prefix_caching: bool = True
    engine_priority: bool = False  # run the engine's priority policy with priority = queue level
    queue: QueueKind = "fcfs"
    queue_params: Mapping[str, object] | None = None  # the policy's Params fields (None: defaults)
    router: str = "round_robin"
    mode: Mode = "sidecar"
    working_set: WorkingSetParams | None = None  # sidecar mode: the KV working-set gate (None: none)
    kv_budget: bool = False  # sidecar mode: admit only calls whose prompt + output fit the KV cache
    preempt: PreemptParams | None = None  # sidecar mode: abort-and-resume (None: never stop a call)

    def with_router(self, router: str | None) -> SystemPreset:
        return self if router is None else dataclasses.replace(self, router=router)


def _presets(*presets: SystemPreset) -> Mapping[str, SystemPreset]:
    return MappingProxyType({p.name: p for p in presets})


SYSTEMS: Mapping[str, SystemPreset] = _presets(
    SystemPreset("vllm", "vLLM: FCFS, no prefix caching, round robin", False, mode="passthrough"),
    SystemPreset("vllm-opt", "vLLM + prefix caching, FCFS, round robin", True, mode="passthrough"),
    SystemPreset("mlfq", "vllm-opt + MLFQ sidecar queue (new calls enter the top)", queue="mlfq"),
    SystemPreset(
        "autellix",
        "PLAS (chains) / ATLAS (DAGs) sidecar queue behind the KV working-set gate (las) and KV budget, "
        "locality routing, priority engine",
        engine_priority=True,
        queue="autellix",
        router="autellix",
        working_set=WorkingSetParams(),
        kv_budget=True,
    ),
    SystemPreset(
        "autellix-resume",
        "autellix + abort-and-resume preemption in the sidecar",
        engine_priority=True,
        queue="autellix",
        router="autellix",
        working_set=WorkingSetParams(),
        kv_budget=True,
        preempt=PreemptParams(),
    ),
    SystemPreset(
        "autellix-fifo",
        "autellix with the gate in program arrival order",
        engine_priority=True,
        queue="autellix",
        router="autellix",
        working_set=WorkingSetParams(order="fifo"),
        kv_budget=True,
    ),
    SystemPreset(
        "autellix-las",
        "the paper's scheduler as built before the gate: PLAS/ATLAS sidecar queue, adaptive window, "
        "locality routing, priority engine",
        engine_priority=True,
        queue="autellix",
        router="autellix",
    ),
    SystemPreset(
        "autellix-kv",
        "autellix-las + the KV budget, no gate (an ablation)",
        engine_priority=True,
        queue="autellix",
        router="autellix",
        kv_budget=True,
    ),
    SystemPreset(
        "continuum",
        "program-level FCFS + a residency gate in arrival order that never displaces (Continuum-style)",
        queue="program-fcfs",
        router="autellix",
        working_set=WorkingSetParams(order="fifo", residency_quantum=float("inf")),
        kv_budget=True,
    ),
    SystemPreset("srpt", "clairvoyant SRPT sidecar queue, locality routing", queue="srpt", router="autellix"),
    SystemPreset(
        "srpt-ws",
        "clairvoyant SRPT behind the working-set gate (ranked by remaining work) and KV budget",
        queue="srpt",
        router="autellix",
        working_set=WorkingSetParams(),
        kv_budget=True,
    ),
    SystemPreset("mlfq-engine", "MLFQ inside the engine (preemptive)", queue="mlfq", mode="engine"),
    SystemPreset(
        "autellix-engine",
        "PLAS/ATLAS inside the engine (preemptive), locality routing",
        queue="autellix",
        router="autellix",
        mode="engine",
    ),
    SystemPreset(
        "srpt-engine", "clairvoyant SRPT inside the engine (preemptive)", queue="srpt", router="autellix",
        mode="engine",
    ),
)  # fmt: skip


def system_names() -> tuple[str, ...]:
    return tuple(SYSTEMS)


def get_system(name: str) -> SystemPreset:
    """The preset called ``name``; ValueError listing the known ones otherwise."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}") from None
