"""The in-memory program table: the embedded default and the simulation's table.

A dict of immutable :class:`~.model.ProgramState` snapshots and a dict of engine counts, updated
by the pure rules of :mod:`.rules` and nothing else. Single-threaded by design: the proxy runs it
inside one event loop, the simulation inside one process, so no lock is needed and none is taken.

``gc`` scans every program (O(programs)); it is meant to run periodically (say every few seconds,
or every ``idle_ttl / 10``), not per call.
"""

from __future__ import annotations

from .model import CallFinish, CallStart, CallStartResult, ProgramExpiry, ProgramState
from .rules import apply_call_finish, apply_call_start, in_flight_engines, is_expired, next_load


class MemoryProgramTable:
    """:class:`~.interface.ProgramTable` in a process's memory."""

    def __init__(self, expiry: ProgramExpiry | None = None) -> None:
        self.expiry = expiry if expiry is not None else ProgramExpiry()
        self._programs: dict[str, ProgramState] = {}
        self._loads: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._programs)

    def __contains__(self, program_id: object) -> bool:
        return program_id in self._programs

    def program_ids(self) -> list[str]:
        return sorted(self._programs)

    def start_call(self, start: CallStart, now: float) -> CallStartResult:
        outcome = apply_call_start(self._programs.get(start.program_id), start, now)
        state = outcome.state
        self._programs[start.program_id] = state
        if outcome.acquired:
            self._add_load(outcome.call.engine_id, 1)
        return CallStartResult(
            program_id=state.program_id,
            call_id=start.call_id,
            engine_id=outcome.call.engine_id,
            pin_created=outcome.pin_created,
            pinned_engine=state.pinned_engine,
            service_plas=outcome.call.service_plas_at_arrival,
            service_atlas=outcome.call.service_atlas_at_arrival,
            program_wait=state.wait,
            prior_calls=outcome.call.index,
            completed_calls=state.calls_completed,
            duplicate=not outcome.acquired,
            engine_loads=dict(self._loads),
        )

    def finish_call(self, finish: CallFinish, now: float) -> ProgramState | None:
        state = self._programs.get(finish.program_id)
        if state is None:
            return None
        outcome = apply_call_finish(state, finish, now)
        if outcome is None:
            return None
        self._programs[finish.program_id] = outcome.state
        self._add_load(outcome.call.engine_id, -1)
        return outcome.state

    def get(self, program_id: str) -> ProgramState | None:
        return self._programs.get(program_id)

    def end(self, program_id: str, now: float) -> ProgramState | None:
        state = self._programs.pop(program_id, None)
        if state is not None:
            self._release(state)
        return state

    def gc(self, now: float) -> list[str]:
        expired = [pid for pid, state in self._programs.items() if is_expired(state, now, self.expiry)]
        for program_id in expired:
            self._release(self._programs.pop(program_id))
        return sorted(expired)

    def engine_loads(self) -> dict[str, int]:
        return dict(self._loads)

    def _release(self, state: ProgramState) -> None:
        for engine_id in in_flight_engines(state):
            self._add_load(engine_id, -1)

    def _add_load(self, engine_id: str, delta: int) -> None:
        count = next_load(self._loads.get(engine_id, 0), delta)
        if count:
            self._loads[engine_id] = count
        else:
            self._loads.pop(engine_id, None)


class AsyncMemoryProgramTable:
    """:class:`~.interface.AsyncProgramTable` over a :class:`MemoryProgramTable` (no awaits inside)."""

    def __init__(self, table: MemoryProgramTable | None = None) -> None:
        self.table = table if table is not None else MemoryProgramTable()

    async def start_call(self, start: CallStart, now: float) -> CallStartResult:
        return self.table.start_call(start, now)

    async def finish_call(self, finish: CallFinish, now: float) -> ProgramState | None:
        return self.table.finish_call(finish, now)

    async def get(self, program_id: str) -> ProgramState | None:
        return self.table.get(program_id)

    async def end(self, program_id: str, now: float) -> ProgramState | None:
        return self.table.end(program_id, now)

    async def gc(self, now: float) -> list[str]:
        return self.table.gc(now)

    async def engine_loads(self) -> dict[str, int]:
        return self.table.engine_loads()
