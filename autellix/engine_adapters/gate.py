"""The admission gate: the sidecar's queue policy and admission window, driven by request handlers.

A thin asyncio layer over the pure parts (scheduling/, admission.py): each handler ``enter``s its call
and awaits a future that resolves with the call's :class:`Admission`; the gate decides, handlers obey.

Rules
-----
1. Every call is in exactly one of: waiting (a future in ``_pending`` and a waiting call in the queue)
   or in flight (``_in_flight`` and running in the queue), from ``enter`` to ``leave``. ``leave`` is
   idempotent and accepts a call in either state, so a handler's ``finally`` can always call it,
   whether the client vanished while the call waited, at the instant it was admitted, or mid-stream.
2. ``pump`` admits while the window has room and is called at every admission opportunity: a call
   arrives, a call leaves, a probe changes the window, a tick promotes someone.
3. Service for demotion accounting is charged to running calls on every tick and at ``leave``: the
   time since the call's last charge (admission, then each tick).
4. The clock is injected (a monotonic clock live, a virtual one in tests); no other time source is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowChange
from autellix.engine_adapters.scheduling import (
    Admission,
    CapacityBudget,
    Demotion,
    Promotion,
    QueuedCall,
    QueuePolicy,
    QueueStats,
)


@dataclass(frozen=True, slots=True)
class GateStats:
    """Everything the metrics exporter reads at scrape time."""

    queue: QueueStats
    in_flight: int
    window: int
    aborted_waiting: int
    aborted_running: int
    engine_load: EngineLoad | None


@dataclass(frozen=True, slots=True)
class TickResult:
    promotions: tuple[Promotion, ...]
    demotions: tuple[Demotion, ...]
    admitted: int


@dataclass(frozen=True, slots=True)
class Departure:
    """A call that left the gate: its queue record (final counters) and whether it was admitted."""

    call: QueuedCall
    was_admitted: bool


class AdmissionGate:
    """Queue + window + the futures of the handlers waiting for admission."""

    def __init__(self, queue: QueuePolicy, window: AdmissionWindow, clock: Callable[[], float]) -> None:
        self.queue = queue
        self.window = window
        self._clock = clock
        self._pending: dict[str, asyncio.Future[Admission]] = {}
        self._in_flight: dict[str, float] = {}  # call id -> time service was last charged
        self._aborted_waiting = 0
        self._aborted_running = 0
        self._engine_load: EngineLoad | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def now(self) -> float:
        return self._clock()

    def enter(self, call: QueuedCall) -> asyncio.Future[Admission]:
        """Queue a call; the future resolves when the call is admitted (maybe at once)."""
        now = self._clock()
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self.queue.add(call, now)
        self._pending[call.call_id] = future
        self.pump(now)
        return future

    def pump(self, now: float | None = None) -> int:
        """Admit the best waiting calls while the window has room; returns how many were admitted."""
        room = self.window.room(len(self._in_flight))
        if room <= 0 or not self._pending:
            return 0
        at = self._clock() if now is None else now
        admissions = self.queue.select_admissions(at, CapacityBudget(calls=room))
        for admission in admissions:
            self._in_flight[admission.call_id] = at
            future = self._pending.pop(admission.call_id, None)
            if future is not None and not future.done():
                future.set_result(admission)
        return len(admissions)

    def leave(self, call_id: str, completed: bool) -> Departure | None:
        """The call is over (completed, failed or abandoned); frees its place. Idempotent."""
        now = self._clock()
        departure: Departure | None = None
        if call_id in self._in_flight:
            charged = self._in_flight.pop(call_id)
            self._charge(call_id, now - charged, now)
            record = self.queue.finish(call_id, now) if completed else self.queue.remove(call_id, now)
            if not completed:
                self._aborted_running += 1
            departure = Departure(record, True) if record is not None else None
        elif call_id in self._pending:
            future = self._pending.pop(call_id)
            if not future.done():
                future.cancel()
            record = self.queue.remove(call_id, now)
            self._aborted_waiting += 1
            departure = Departure(record, False) if record is not None else None
        self.pump(now)
        return departure

    def tick(self) -> TickResult:
        """Timer: charge service to running calls (demotions), apply due promotions, admit."""
        now = self._clock()
        demotions: list[Demotion] = []
        for call_id, charged in self._in_flight.items():
            demotion = self._charge(call_id, now - charged, now)
            self._in_flight[call_id] = now
            if demotion is not None:
                demotions.append(demotion)
        events = self.queue.tick(now)
        admitted = self.pump(now)
        return TickResult(events.promotions, tuple(demotions), admitted)

    def observe(self, load: EngineLoad) -> WindowChange:
        """A load probe result: adapt the window, then admit if it grew."""
        now = self._clock()
        self._engine_load = load
        change = self.window.observe(load, len(self._in_flight), len(self._pending), now)
        self.pump(now)
        return change

    def stats(self) -> GateStats:
        return GateStats(
            queue=self.queue.snapshot(),
            in_flight=len(self._in_flight),
            window=self.window.size,
            aborted_waiting=self._aborted_waiting,
            aborted_running=self._aborted_running,
            engine_load=self._engine_load,
        )

    def _charge(self, call_id: str, seconds: float, now: float) -> Demotion | None:
        return self.queue.record_service(call_id, max(0.0, seconds), now)
