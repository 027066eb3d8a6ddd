"""One admission core, two shells: the simulation's decisions replayed through the live gate agree.

The discrete-event simulation drives :class:`SidecarScheduler` from its event loop; the live sidecar
drives it through :class:`AdmissionGate` (asyncio futures, an injected clock). Here every event the
simulation fed to its schedulers (arrivals, departures, probes, ticks, admission opportunities) is
recorded, replayed in the same order on a virtual clock through a live gate built like the
sidecar's, and the admissions the live gate's futures resolve with must be the simulation's, call for
call, in the same order, at the same times, from the same levels.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad
from autellix.engine_adapters.gate import AdmissionGate
from autellix.engine_adapters.scheduler import CallTokens, CallUsage, SidecarScheduler, TickResult
from autellix.engine_adapters.scheduling import Admission, QueuedCall, get_policy
from autellix.engine_adapters.scheduling.working_set import WorkingSetGate
from autellix.loadgen.arrivals import make_workload
from autellix.simulator import cluster as cluster_module
from autellix.simulator.cluster import ClusterConfig, simulate
from autellix.simulator.cluster_systems import get_system

Event = tuple[Any, ...]


def check_one_select_per_instant(log: list[Event]) -> None:
    """One decision per instant; a second only right after a call was stopped for a resume."""
    counts = Counter(e[1] for e in log if e[0] == "select")
    resumed = {e[1] for e in log if e[0] == "progress"}
    assert all(n == 1 or (t in resumed and n == 2) for t, n in counts.items())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recording_scheduler(log: list[Event]) -> type[SidecarScheduler]:
    class Recording(SidecarScheduler):
        def enter(
            self, call: QueuedCall, now: float, tokens: CallTokens | None = None, *, resumable: bool = False
        ) -> None:
            log.append(("enter", now, dataclasses.replace(call), tokens))
            super().enter(call, now, tokens, resumable=resumable)

        def select(self, now: float) -> tuple[Admission, ...]:
            admitted = super().select(now)
            log.append(("select", now, admitted))
            return admitted

        def leave(self, call_id: str, now: float, completed: bool, usage: CallUsage | None = None) -> Any:
            log.append(("leave", now, call_id, completed, usage))
            return super().leave(call_id, now, completed, usage)

        def progress(self, call_id: str, generated: int) -> None:
            log.append(("progress", self._clock, call_id, generated))
            super().progress(call_id, generated)

        def tick(self, now: float) -> TickResult:
            log.append(("tick", now))
            return super().tick(now)

        def observe(self, load: EngineLoad, now: float, sent_at: float | None = None) -> Any:
            log.append(("observe", now, load))
            return super().observe(load, now, sent_at)

    return Recording


def simulated_log(monkeypatch: pytest.MonkeyPatch, system: str) -> tuple[list[Event], ClusterConfig]:
    log: list[Event] = []
    monkeypatch.setattr(cluster_module, "SidecarScheduler", recording_scheduler(log))
    programs = make_workload("mixed", 9, 3.0, seed=5)
    # a small cache and batch, so the window, the KV budget and the gate all bind
    config = ClusterConfig(profile="a100-llama3-8b", max_num_seqs=6, num_gpu_blocks=900, overprovision=1)
    result = simulate(programs, get_system(system), config)
    assert result.summary.programs_incomplete == 0
    return log, config


def admissions_in(log: list[Event]) -> Iterator[tuple[float, str, int, float]]:
    for event in log:
        if event[0] == "select":
            for a in event[2]:
                yield (event[1], a.call_id, a.level, a.waited)


async def replay_live(
    log: list[Event], system: str, config: ClusterConfig
) -> list[tuple[float, str, int, float]]:
    preset = get_system(system)
    queue_name = "plas" if preset.queue == "autellix" else preset.queue
    clock = Clock()
    gate = AdmissionGate(
        get_policy(queue_name, preset.queue_params),
        AdmissionWindow(config.window_params(config.max_num_seqs or 256)),
        clock,
        working_set=WorkingSetGate(preset.working_set) if preset.working_set is not None else None,
        kv_budget=preset.kv_budget,
        preempt=preset.preempt,
    )
    watched: set[int] = set()  # resumed futures already recorded
    admitted: list[tuple[float, str, int, float]] = []

    def record(future: asyncio.Future[Admission], at: float) -> None:
        if not future.cancelled():
            a = future.result()
            admitted.append((at, a.call_id, a.level, a.waited))

    index = 0
    while index < len(log):
        now = log[index][1]
        clock.now = now
        # one virtual instant: its events, then the one admission decision the gate takes at the end
        # of the event loop's turn (the simulation's select of that instant)
        while index < len(log) and log[index][1] == now:
            event = log[index]
            kind = event[0]
            if kind == "enter":
                future = gate.enter(dataclasses.replace(event[2]), event[3], resumable=True)
                future.add_done_callback(lambda f: record(f, clock.now))
            elif kind == "progress":
                gate.progress(event[2], event[3])
            elif kind == "leave":
                gate.leave(event[2], event[3], event[4])
            elif kind == "tick":
                gate.tick()
            elif kind == "observe":
                gate.observe(event[2])
            index += 1
        await asyncio.sleep(0)  # the gate's select runs
        await asyncio.sleep(0)  # the futures' done callbacks run, in resolution order
        for call_id in {e[2] for e in log if e[0] == "progress"}:
            stop, resumed = gate.stop_event(call_id), gate.resumed(call_id)
            if stop is not None and stop.is_set() and resumed is not None and id(resumed) not in watched:
                watched.add(id(resumed))  # a stopped call: its next admission is a resume
                resumed.add_done_callback(lambda f: record(f, clock.now))
        await asyncio.sleep(0)
    return admitted


@pytest.mark.parametrize("system", ["autellix", "autellix-resume", "autellix-las", "continuum", "srpt-ws"])
async def test_live_gate_replays_the_simulated_admissions(
    monkeypatch: pytest.MonkeyPatch, system: str
) -> None:
    log, config = simulated_log(monkeypatch, system)
    simulated = list(admissions_in(log))
    assert len(simulated) >= 50  # every call of the nine programs, at least once
    assert sum(a[3] > 0 for a in simulated) >= 10  # and they competed: many waited
    assert any(e[0] == "observe" for e in log) and any(e[0] == "tick" for e in log)
    check_one_select_per_instant(log)
    live = await replay_live(log, system, config)
    assert live == simulated
