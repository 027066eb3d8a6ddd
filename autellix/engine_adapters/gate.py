"""The admission gate: the sidecar's pure admission core (scheduler.py) driven by request handlers.

A thin asyncio layer: each handler ``enter``s its call and awaits a future that resolves with the
call's :class:`Admission`; :class:`SidecarScheduler` decides, handlers obey. The discrete-event
simulation drives the very same scheduler from its event loop (simulator/cluster.py), so what is
measured in virtual time is what runs here.

Rules
-----
1. A call has a future from ``enter`` until it is admitted or leaves. ``leave`` is idempotent and
   accepts a call in any state, so a handler's ``finally`` can always call it, whether the client
   vanished while the call waited, at the instant it was admitted, or mid-stream.
2. After events (a call arrives or leaves, a probe, a tick) the scheduler's ``select`` runs once, at
   the end of the event loop's current turn (``loop.call_soon``), and the futures of the calls it
   admitted are resolved in its order: calls that arrive in one turn are weighed together, exactly as
   the simulation weighs the events of one virtual instant together (scheduler.py rule 2).
3. The clock is injected (a monotonic clock live, a virtual one in tests); no other time source is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowChange
from autellix.engine_adapters.scheduler import (
    CallTokens,
    CallUsage,
    Departure,
    SchedulerStats,
    SidecarScheduler,
    TickResult,
)
from autellix.engine_adapters.scheduling import Admission, QueuedCall, QueuePolicy
from autellix.engine_adapters.scheduling.working_set import WorkingSetGate

__all__ = ["AdmissionGate", "CallTokens", "CallUsage", "Departure", "GateStats", "TickResult"]

GateStats = SchedulerStats  # the name the metrics exporter has always read


class AdmissionGate:
    """The scheduler + the futures of the handlers waiting for admission."""

    def __init__(
        self,
        queue: QueuePolicy,
        window: AdmissionWindow,
        clock: Callable[[], float],
        *,
        working_set: WorkingSetGate | None = None,
        kv_capacity_tokens: int | None = None,
        kv_headroom: float = 0.05,
        kv_budget: bool = True,
    ) -> None:
        self.scheduler = SidecarScheduler(
            queue,
            window,
            working_set,
            kv_capacity_tokens=kv_capacity_tokens,
            kv_headroom=kv_headroom,
            kv_budget=kv_budget,
        )
        self._clock = clock
        self._pending: dict[str, asyncio.Future[Admission]] = {}
        self._pump_scheduled = False

    @property
    def queue(self) -> QueuePolicy:
        return self.scheduler.queue

    @property
    def window(self) -> AdmissionWindow:
        return self.scheduler.window

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def now(self) -> float:
        return self._clock()

    def enter(self, call: QueuedCall, tokens: CallTokens | None = None) -> asyncio.Future[Admission]:
        """Queue a call; the future resolves when the call is admitted (maybe at once)."""
        now = self._clock()
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self.scheduler.enter(call, now, tokens)
        self._pending[call.call_id] = future
        self._pump_soon()
        return future

    def pump(self, now: float | None = None) -> int:
        """Admit whatever the scheduler lets in now; returns how many were admitted."""
        admitted = self.scheduler.select(self._clock() if now is None else now)
        self._resolve(admitted)
        return len(admitted)

    def _pump_soon(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def leave(self, call_id: str, completed: bool, usage: CallUsage | None = None) -> Departure | None:
        """The call is over (completed, failed or abandoned); frees its place. Idempotent."""
        now = self._clock()
        future = self._pending.pop(call_id, None)
        if future is not None and not future.done():
            future.cancel()
        departure = self.scheduler.leave(call_id, now, completed, usage)
        self._pump_soon()
        return departure

    def tick(self) -> TickResult:
        """Timer: charge service to running calls (demotions), apply due promotions, admit."""
        result = self.scheduler.tick(self._clock())
        self._pump_soon()
        return result

    def observe(self, load: EngineLoad, sent_at: float | None = None) -> WindowChange:
        """A load probe result (taken at ``sent_at``): adapt the window and KV budget, then admit."""
        now = self._clock()
        change = self.scheduler.observe(load, now, sent_at)
        self._pump_soon()
        return change

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    def _resolve(self, admitted: tuple[Admission, ...]) -> None:
        for admission in admitted:
            future = self._pending.pop(admission.call_id, None)
            if future is not None and not future.done():
                future.set_result(admission)
