"""The program table's update rules, as pure functions (Autellix paper §4, reference.md §1).

Theory of operation
-------------------
The table is a map ``program_id -> ProgramState`` plus one fleet-wide map ``engine_id -> outstanding
calls``. Every implementation (the in-memory table here, a Redis table whose Lua scripts do each
operation in one atomic round trip) applies exactly these rules, and the shared contract suite
(``tests/contract``) checks them against each other.

1. Start. A call joins its program's in-flight set with the program's service at arrival (both PLAS
   and ATLAS values: the call's S is the program's S now). Starting a call never changes service:
   service changes only when a call completes. An unknown program is created by its first call.
2. Pin. If the start asks to pin and the program has no pin, the program is pinned to the chosen
   engine. If it is pinned already, the call goes to the pinned engine instead, whatever routing
   chose: pins never move, so replicas that routed on a stale view still agree. A start that does not
   ask to pin goes where routing sent it (short calls go to the least-used engine).
3. Duplicate start. A call id already in flight is a retry of the same start: the state and the
   engine counts stay unchanged and the result repeats the call's engine.
4. Finish. ``service_plas += exec``, ``service_atlas = max(service_atlas, call_S + exec)`` (the
   paper's example: S=2 and two parallel calls of 3 and 1 give S=5, where the PLAS sum is 6),
   ``wait += queue_wait``; the call leaves the in-flight set. A failed call counts the same (it did
   occupy the engine) and is also counted as failed. A finish for a call that is not in flight
   (unknown, already finished, program ended) changes nothing, so a duplicate never double-counts.
5. Measurements are sanitised: a negative, NaN or infinite time counts as 0 and token counts are
   clamped at 0, so both service values are non-decreasing and ``service_atlas <= service_plas``
   always holds (IEEE addition is monotone, so the inequality survives rounding too).
6. Engine counts. A start that adds an in-flight call adds 1 to its final engine; a call that leaves
   the in-flight set (finish, ``end``, expiry) subtracts 1 from that engine. Counts are clamped at 0
   and an engine whose count reaches 0 is dropped, so a table's ``engine_loads()`` lists exactly the
   engines with outstanding calls and equals the in-flight calls counted per engine.
7. Expiry: see :class:`~.model.ProgramExpiry` (idle TTL; a much longer TTL with calls in flight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .model import CallFinish, CallStart, InFlightCall, ProgramExpiry, ProgramState


@dataclass(frozen=True, slots=True)
class StartOutcome:
    state: ProgramState  # the program after the start
    call: InFlightCall  # the call's in-flight entry (the existing one for a duplicate)
    pin_created: bool
    acquired: bool  # whether the final engine's outstanding count must go up by one


@dataclass(frozen=True, slots=True)
class FinishOutcome:
    state: ProgramState  # the program after the finish
    call: InFlightCall  # the entry that left the in-flight set: its engine's count goes down by one


def measured_seconds(value: float) -> float:
    """A measured duration as the rules count it (rule 5)."""
    return value if value > 0.0 and math.isfinite(value) else 0.0


def new_program(program_id: str, now: float) -> ProgramState:
    return ProgramState(program_id=program_id, created_at=now)


def apply_call_start(state: ProgramState | None, start: CallStart, now: float) -> StartOutcome:
    """Rules 1-3: the program after ``start`` and where the call finally goes."""
    if state is None:
        state = new_program(start.program_id, now)
    else:
        existing = state.find_call(start.call_id)
        if existing is not None:
            return StartOutcome(state=state, call=existing, pin_created=False, acquired=False)
    pinned = state.pinned_engine
    pin_created = False
    engine_id = start.engine_id
    if start.pin:
        if pinned is None:
            pinned = engine_id
            pin_created = True
        else:
            engine_id = pinned
    call = InFlightCall(
        call_id=start.call_id,
        thread_id=start.thread_id,
        engine_id=engine_id,
        arrival=now,
        index=state.calls_started,
        service_plas_at_arrival=state.service_plas,
        service_atlas_at_arrival=state.service_atlas,
        input_tokens=max(0, start.input_tokens),
    )
    after = ProgramState(
        program_id=state.program_id,
        created_at=state.created_at,
        service_plas=state.service_plas,
        service_atlas=state.service_atlas,
        wait=state.wait,
        pinned_engine=pinned,
        in_flight=(*state.in_flight, call),
        last_arrival=now,
        last_completion=state.last_completion,
        calls_started=state.calls_started + 1,
        calls_completed=state.calls_completed,
        calls_failed=state.calls_failed,
        prompt_tokens=state.prompt_tokens,
        cached_tokens=state.cached_tokens,
        output_tokens=state.output_tokens,
        kind=state.kind or start.kind,
    )
    return StartOutcome(state=after, call=call, pin_created=pin_created, acquired=True)


def finished_service(
    plas: float, atlas: float, wait: float, call_atlas_at_arrival: float, finish: CallFinish
) -> tuple[float, float, float]:
    """Rules 4-5 on the priority context alone: ``(service_plas, service_atlas, wait)`` after ``finish``
    of a call that arrived with ATLAS value ``call_atlas_at_arrival``. The Redis script computes the
    same doubles in the same order, so a mirror of the context built with this stays equal to it."""
    exec_time = measured_seconds(finish.exec_time)
    return (
        plas + exec_time,
        max(atlas, call_atlas_at_arrival + exec_time),
        wait + measured_seconds(finish.queue_wait),
    )


def apply_call_finish(state: ProgramState, finish: CallFinish, now: float) -> FinishOutcome | None:
    """Rules 4-5: the program after ``finish``, or None when the call is not in flight."""
    call = state.find_call(finish.call_id)
    if call is None:
        return None
    plas, atlas, wait = finished_service(
        state.service_plas, state.service_atlas, state.wait, call.service_atlas_at_arrival, finish
    )
    after = ProgramState(
        program_id=state.program_id,
        created_at=state.created_at,
        service_plas=plas,
        service_atlas=atlas,
        wait=wait,
        pinned_engine=state.pinned_engine,
        in_flight=tuple(c for c in state.in_flight if c.call_id != finish.call_id),
        last_arrival=state.last_arrival,
        last_completion=now,
        calls_started=state.calls_started,
        calls_completed=state.calls_completed + 1,
        calls_failed=state.calls_failed + (0 if finish.ok else 1),
        prompt_tokens=state.prompt_tokens + max(0, finish.prompt_tokens),
        cached_tokens=state.cached_tokens + max(0, finish.cached_tokens),
        output_tokens=state.output_tokens + max(0, finish.output_tokens),
        kind=state.kind,
    )
    return FinishOutcome(state=after, call=call)


def in_flight_engines(state: ProgramState) -> tuple[str, ...]:
    """One engine id per in-flight call: the counts to release when the program ends or expires."""
    return tuple(call.engine_id for call in state.in_flight)


def is_expired(state: ProgramState, now: float, expiry: ProgramExpiry) -> bool:
    """Rule 7: strictly longer than the TTL, so a program is still alive exactly at the TTL."""
    ttl = expiry.stuck_ttl if state.in_flight else expiry.idle_ttl
    return now - state.last_activity > ttl


def next_load(count: int, delta: int) -> int:
    """Rule 6: an engine's outstanding count after adding ``delta``, never below zero."""
    return max(0, count + delta)
