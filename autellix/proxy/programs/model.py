"""Plain data of the program table: a program's state, and what a call's start and finish carry.

Every type here is a frozen, slotted dataclass: the table hands out snapshots that no caller can
mutate behind its back, and the same values cross process boundaries (Redis hashes, HTTP headers)
without hidden identity. The rules that turn one state into the next live in :mod:`.rules`.

Field names follow the Autellix paper's process table (paper §4, reference.md §1): attained service,
waiting time, engine, threads with their active calls, most recent arrival and completion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallStart:
    """A call is about to be sent to an engine (emitted by the proxy right after routing)."""

    program_id: str
    call_id: str
    engine_id: str  # the engine routing chose; the table may redirect it to the program's pin
    thread_id: str | None = None  # None = the program's main thread
    input_tokens: int = 0
    pin: bool = False  # pin the program to engine_id unless it is pinned already
    kind: str | None = None  # what the client says the program is (metrics label); kept from the first


@dataclass(frozen=True, slots=True)
class CallFinish:
    """A call has ended; the figures are the sidecar's measurements (DESIGN.md §3)."""

    program_id: str
    call_id: str
    exec_time: float  # seconds the engine spent executing the call: the paper's unit of service
    queue_wait: float = 0.0  # seconds the call waited in the sidecar and engine queues
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    ok: bool = True  # a failed call still adds its measured exec time, but is counted as failed


@dataclass(frozen=True, slots=True)
class InFlightCall:
    """One active call of a program, as the process table's thread entries record it."""

    call_id: str
    thread_id: str | None
    engine_id: str  # the engine the call was finally assigned to
    arrival: float
    index: int  # 0-based position among the program's calls (its "prior calls" count)
    service_plas_at_arrival: float
    service_atlas_at_arrival: float  # ATLAS: the S the call inherits, to which its exec time adds
    input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ProgramState:
    """A program's entry in the table. Both service measures are kept so a sidecar can use either."""

    program_id: str
    created_at: float
    service_plas: float = 0.0  # PLAS: sum of exec times of completed calls
    service_atlas: float = 0.0  # ATLAS: longest observed critical path S
    wait: float = 0.0  # sum of completed calls' queue waits
    pinned_engine: str | None = None  # set once, on the first pinning call; never moves
    in_flight: tuple[InFlightCall, ...] = ()  # in arrival order
    last_arrival: float | None = None
    last_completion: float | None = None
    calls_started: int = 0
    calls_completed: int = 0  # failed calls included
    calls_failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    kind: str | None = None  # the first kind a call named (CallStart.kind); None: not said

    @property
    def response_time(self) -> float:
        """Creation to last completion (0 before any): the paper's program response time."""
        if self.last_completion is None:
            return 0.0
        return max(0.0, self.last_completion - self.created_at)

    @property
    def last_activity(self) -> float:
        """The latest of creation, last arrival and last completion (idle expiry counts from it).

        A maximum, not the last write, so that replicas whose clocks disagree slightly can never
        move a program's activity backwards.
        """
        latest = self.created_at
        if self.last_arrival is not None and self.last_arrival > latest:
            latest = self.last_arrival
        if self.last_completion is not None and self.last_completion > latest:
            latest = self.last_completion
        return latest

    def find_call(self, call_id: str) -> InFlightCall | None:
        for call in self.in_flight:
            if call.call_id == call_id:
                return call
        return None

    def threads(self) -> dict[str | None, tuple[InFlightCall, ...]]:
        """In-flight calls grouped by thread (None = main thread), threads in order of first arrival."""
        grouped: dict[str | None, list[InFlightCall]] = {}
        for call in self.in_flight:
            grouped.setdefault(call.thread_id, []).append(call)
        return {thread: tuple(calls) for thread, calls in grouped.items()}


@dataclass(frozen=True, slots=True)
class CallStartResult:
    """What the proxy learns from one atomic start: where the call goes and its priority context."""

    program_id: str
    call_id: str
    engine_id: str  # the final engine: the pinned one when a pin request met an existing pin
    pin_created: bool  # this start pinned the program
    pinned_engine: str | None  # the program's pin after this start
    service_plas: float  # the program's priority context at the call's arrival ...
    service_atlas: float
    program_wait: float
    prior_calls: int  # ... and how many calls the program started before this one
    completed_calls: int
    duplicate: bool  # the call id was already in flight: nothing changed, engine counts included
    engine_loads: Mapping[str, int]  # outstanding calls per engine after this start (fleet view)


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply an engine stored (a Responses API response): whose program it is, which engine has it."""

    program_id: str
    engine_id: str


@dataclass(frozen=True, slots=True)
class ProgramExpiry:
    """When ``gc(now)`` drops a program.

    1. A program with no in-flight call expires once ``now - last_activity > idle_ttl``.
    2. A program with in-flight calls expires once ``now - last_activity > stuck_ttl``: its finish
       reports were lost (a crashed client, proxy replica or sidecar), and without this rule its state
       and its engine counts would leak forever. Expiry releases the engine counts of those calls.

    Defaults: ten idle minutes covers an agent's tool calls and a human's think time between chat
    turns; by then an engine's prefix cache has usually turned over, so losing the pin costs little,
    and a program that comes back merely restarts with zero service. An hour without any arrival or
    completion is far beyond any single LLM call, so ``stuck_ttl`` only catches genuinely lost calls.
    """

    idle_ttl: float = 600.0
    stuck_ttl: float = 3600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.idle_ttl) and self.idle_ttl > 0):
            raise ValueError(f"idle_ttl must be a positive number of seconds, got {self.idle_ttl!r}")
        if not (math.isfinite(self.stuck_ttl) and self.stuck_ttl >= self.idle_ttl):
            raise ValueError(f"stuck_ttl must be >= idle_ttl ({self.idle_ttl}), got {self.stuck_ttl!r}")
