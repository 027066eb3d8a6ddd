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
3. Abort-and-resume (scheduler.py rule 5, when the scheduler has ``PreemptParams``): after a tick the
   decision may stop a running call that its handler entered as ``resumable``. The gate then sets the
   call's stop event (``stop_event``), and the handler must stop the engine request (close its
   connection) and await ``resumed``, a future that resolves with the call's next admission; it
   resubmits the rest of the call then, and clears the event itself once it has acted on it (so a
   stop is never missed, however late the handler looks; a stopped call re-admitted in the very
   decision that stopped it was never really stopped, and its event is cleared at once).
   ``progress`` tells the scheduler how many tokens a call has generated (so a call near its
   ``max_tokens`` is never stopped), ``no_longer_resumable`` that it can no longer be stopped.
4. The clock is injected (a monotonic clock live, a virtual one in tests); no other time source is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowChange
from autellix.engine_adapters.scheduler import (
    CallTokens,
    CallUsage,
    Departure,
    PreemptParams,
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
        preempt: PreemptParams | None = None,
    ) -> None:
        self.scheduler = SidecarScheduler(
            queue,
            window,
            working_set,
            kv_capacity_tokens=kv_capacity_tokens,
            kv_headroom=kv_headroom,
            kv_budget=kv_budget,
            preempt=preempt,
        )
        self._clock = clock
        self._pending: dict[str, asyncio.Future[Admission]] = {}
        self._pump_scheduled = False
        self._preempt_due = False
        self._stops: dict[str, asyncio.Event] = {}
        self._resumes: dict[str, asyncio.Future[Admission]] = {}  # a stopped call's next admission

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

    def resident_fraction(self) -> float | None:
        """The working-set gate's residents' KV as a share of the cache (None: no gate, or size unknown)."""
        gate = self.scheduler.gate
        return gate.resident_fraction() if gate is not None else None

    def now(self) -> float:
        return self._clock()

    def enter(
        self, call: QueuedCall, tokens: CallTokens | None = None, *, resumable: bool = False
    ) -> asyncio.Future[Admission]:
        """Queue a call; the future resolves when the call is admitted (at the end of this loop turn
        at the earliest). A ``resumable`` call may be stopped and resumed (rule 3)."""
        now = self._clock()
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self.scheduler.enter(call, now, tokens, resumable=resumable)
        self._pending[call.call_id] = future
        if resumable:
            self._stops[call.call_id] = asyncio.Event()
        self._pump_soon()
        return future

    def stop_event(self, call_id: str) -> asyncio.Event | None:
        """Set when the scheduler stops the (resumable) call; None for a call that cannot be stopped."""
        return self._stops.get(call_id)

    def resumed(self, call_id: str) -> asyncio.Future[Admission] | None:
        """After a stop: the future of the call's next admission (None if it was never stopped)."""
        return self._resumes.get(call_id)

    def progress(self, call_id: str, generated: int) -> None:
        self.scheduler.progress(call_id, generated)

    def no_longer_resumable(self, call_id: str) -> None:
        self.scheduler.no_longer_resumable(call_id)

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
        if self._preempt_due:
            self._preempt_due = False
            now = self._clock()
            stopped = self.scheduler.preempt(now)
            for preemption in stopped:
                future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
                self._pending[preemption.call_id] = self._resumes[preemption.call_id] = future
                event = self._stops.get(preemption.call_id)
                if event is not None:
                    event.set()
            if stopped:
                self.pump(now)
            for preemption in stopped:  # re-admitted at once: never stopped after all (rule 3)
                if preemption.call_id not in self._pending:
                    self._resumes.pop(preemption.call_id, None)
                    event = self._stops.get(preemption.call_id)
                    if event is not None:
                        event.clear()

    def leave(self, call_id: str, completed: bool, usage: CallUsage | None = None) -> Departure | None:
        """The call is over (completed, failed or abandoned); frees its place. Idempotent."""
        now = self._clock()
        future = self._pending.pop(call_id, None)
        if future is not None and not future.done():
            future.cancel()
        self._stops.pop(call_id, None)
        self._resumes.pop(call_id, None)
        departure = self.scheduler.leave(call_id, now, completed, usage)
        self._pump_soon()
        return departure

    def tick(self) -> TickResult:
        """Timer: charge service to running calls (demotions), apply due promotions, admit."""
        result = self.scheduler.tick(self._clock())
        self._preempt_due = self.scheduler.preempt_params is not None
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
