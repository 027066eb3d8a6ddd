"""The sidecar's admission core: one pure object that decides which call enters the engine, and when.

The live sidecar (gate.py wraps it in asyncio futures) and the discrete-event simulation's sidecar
shell (simulator/cluster.py) drive this same object with the same events, so a policy measured in
virtual time is the policy that runs live (tests/unit/test_scheduler_parity.py checks it).

Theory of operation
-------------------
Four pure parts, composed here:

- the queue policy (scheduling/: PLAS, ATLAS, MLFQ, FCFS, SRPT) orders the calls that may run;
- the working-set gate (scheduling/working_set.py, optional) decides which *programs* may hold KV on
  this engine; calls of other programs wait at the gate, outside the queue;
- the admission window (admission.py) bounds how many calls are in the engine at once;
- the KV budget (rule 4) keeps the calls in the engine within its KV cache, so the engine never has to
  preempt one of them (vLLM recomputes a preempted request from scratch).

Rules:

1. ``enter``: a call of a resident program (or any call, without a gate) is added to the queue; any
   other call waits at the gate. Every call is in exactly one of: at the gate, in the queue, in the
   engine, from ``enter`` to ``leave``; ``leave`` is idempotent and accepts a call in any state.
2. ``select`` lets the gate release programs (their calls join the queue) and recall displaced ones
   (their queued calls go back to the gate), then admits from the queue, best first, while the window
   has room and the call fits the KV budget, stopping at the first call that does not fit (the
   paper's rule). The event methods (``enter``, ``leave``, ``observe``, ``tick``) never admit by
   themselves: a shell calls ``select`` once at the end of each instant in which anything happened
   (the live gate: at the end of the event loop's turn; the simulation: after every event of that
   virtual time), so calls that arrive together are weighed together, and a call that completes
   and the next call of its program (issued at the same instant) compete as the engine-integrated
   scheduler would see them.
3. Service is charged to running calls on every ``tick`` and at ``leave`` (the time since the last
   charge), so demotion works while a call runs; a call's reported wait is all its time before
   admission, at the gate and in the queue, never reset by a promotion.
4. KV budget, in tokens, when the engine's cache size is known (a probe carries it): a call weighs its
   prompt plus the output it may still generate (``max_tokens`` up to :data:`MAX_OUTPUT_RESERVE`, or
   a default reserve), and is admitted
   only while ``held + reserved + weight <= capacity * (1 - kv_headroom)``, where ``held`` is the
   engine's KV usage at the last probe, and ``reserved`` the full weight of every call admitted since
   that probe was sent plus the output reserve of every call admitted before it and still running.
   Counting a running call's whole reserve while ``held`` already holds what it generated is
   conservative by design: it errs towards a smaller batch, never towards a preemption. An empty
   engine always takes its first call, so nothing can block forever. The reserve is capped because
   clients set ``max_tokens`` far above what they get (16,000 for a 50-token answer): counted whole,
   a few such calls would hold the engine to a batch of one. A call that does run past the cap can
   make the engine preempt, as it could without a sidecar.
5. Abort-and-resume preemption (``preempt``; off unless ``PreemptParams`` are given). A sidecar cannot
   make an unmodified engine preempt, but it can stop a call (close its connection: the engine frees
   its blocks and keeps the full ones in its prefix cache) and later resubmit its prompt plus the
   tokens it already generated, asking only for the rest (reference.md §6). At most one call is
   stopped per decision, and only when all of these hold: the best waiting call could not be admitted
   (the window or the KV budget is full) and would be once the victim is gone; it ranks ahead of the
   victim by the queue's own order, by at least ``level_gap`` levels in a multi-level queue; the
   victim is the worst running call that has run at least ``min_run`` seconds since it last entered
   the engine (a minimum quantum, so nothing thrashes), has more than ``min_remaining`` tokens of its
   ``max_tokens`` left (a call about to finish is never stopped) and has been stopped fewer than
   ``max_preemptions`` times. The victim goes back to the queue in its old place (it keeps its level
   and sequence number) and is admitted again like any other call; the shell aborts it in the engine
   and resumes it then. A shell that learns it can no longer resume a call faithfully says so
   (``no_longer_resumable``); a stopped call whose stream ended before the stop reached it leaves as
   completed, not as an abort.
6. Time is the caller's ``now`` and never goes backwards; nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowChange
from autellix.engine_adapters.scheduling import (
    Admission,
    Demotion,
    Promotion,
    QueuedCall,
    QueuePolicy,
    QueueStats,
)
from autellix.engine_adapters.scheduling.working_set import GateCall, GateStats, WorkingSetGate

__all__ = [
    "Budget",
    "CallTokens",
    "CallUsage",
    "Departure",
    "PreemptParams",
    "Preemption",
    "SchedulerStats",
    "SidecarScheduler",
    "TickResult",
]

DEFAULT_OUTPUT_RESERVE = 512  # tokens a call without max_tokens is expected to generate, at most
MAX_OUTPUT_RESERVE = 4096  # the most output tokens a call's max_tokens reserves (rule 4)


@dataclass(frozen=True, slots=True)
class CallTokens:
    """What a call weighs in KV: its prompt and the output it may still generate."""

    prompt: int
    reserve: int

    @property
    def total(self) -> int:
        return self.prompt + self.reserve


@dataclass(frozen=True, slots=True)
class PreemptParams:
    """Abort-and-resume (rule 5); the defaults and their reasons are in README "Results"."""

    level_gap: int = 2  # the waiting call must rank this many levels above the victim
    min_run: float = 2.0  # seconds a call runs in one spell before it may be stopped
    min_remaining: int = 32  # tokens of max_tokens that must remain for a call to be stopped
    max_preemptions: int = 3  # a call is stopped at most this many times

    def __post_init__(self) -> None:
        if self.level_gap < 0 or self.min_remaining < 0 or self.max_preemptions < 0:
            raise ValueError("level_gap, min_remaining and max_preemptions must be >= 0")
        if not (math.isfinite(self.min_run) and self.min_run >= 0):
            raise ValueError(f"min_run must be a finite number >= 0, got {self.min_run!r}")


@dataclass(frozen=True, slots=True)
class Preemption:
    """A running call the shell must stop now (abort in the engine) and resume when re-admitted."""

    call_id: str
    program_id: str
    level: int
    generated: int  # tokens it had generated, as the shell last said
    for_call: str  # the waiting call it makes room for


@dataclass(frozen=True, slots=True)
class CallUsage:
    """What the engine reported for a call that ended (None fields: not reported)."""

    exec_time: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """Everything the metrics exporter reads at scrape time."""

    queue: QueueStats
    in_flight: int
    window: int
    aborted_waiting: int
    aborted_running: int
    engine_load: EngineLoad | None
    gate: GateStats | None
    kv_capacity_tokens: int | None
    kv_reserved_tokens: int  # what rule 4 counts against the cache right now
    preempted: int = 0  # calls stopped for a resume (rule 5), cumulative


@dataclass(frozen=True, slots=True)
class TickResult:
    promotions: tuple[Promotion, ...]
    demotions: tuple[Demotion, ...]


@dataclass(frozen=True, slots=True)
class Departure:
    """A call that left: its queue record (final counters; None if it never reached the queue) and
    whether it had been admitted into the engine."""

    call: QueuedCall | None
    was_admitted: bool


@dataclass(slots=True, eq=False)
class _Ticket:
    call: QueuedCall
    tokens: CallTokens
    arrival: float
    waited: float = 0.0  # time before admission, summed over waiting spells
    wait_start: float = 0.0
    where: int = 0  # _GATE, _QUEUE or _ENGINE
    charged: float = 0.0  # in the engine: when service was last charged
    admitted_at: float = 0.0
    generated: int = 0  # output tokens generated so far, over all spells (the shell's count)
    preemptions: int = 0
    resumable: bool = False  # the shell can stop and resume this call (rule 5)


_GATE, _QUEUE, _ENGINE = 0, 1, 2


class SidecarScheduler:
    """Queue policy + working-set gate + admission window + KV budget (rules in the module docstring)."""

    def __init__(
        self,
        queue: QueuePolicy,
        window: AdmissionWindow,
        gate: WorkingSetGate | None = None,
        *,
        kv_capacity_tokens: int | None = None,
        kv_headroom: float = 0.05,
        kv_budget: bool = True,
        preempt: PreemptParams | None = None,
    ) -> None:
        if not (math.isfinite(kv_headroom) and 0 <= kv_headroom < 1):
            raise ValueError(f"kv_headroom must be in [0, 1), got {kv_headroom!r}")
        self.queue = queue
        self.window = window
        self.gate = gate
        self.kv_headroom = kv_headroom
        self.kv_budget = kv_budget
        self.preempt_params = preempt
        self._preempted = 0
        self._capacity: int | None = None
        self._tickets: dict[str, _Ticket] = {}
        self._engine: dict[str, _Ticket] = {}  # in the engine, in admission order
        self._held = 0  # tokens the engine held at the last probe
        self._probe_sent = -math.inf  # when the last probe that reported KV usage was taken
        self._aborted_waiting = 0
        self._aborted_running = 0
        self._engine_load: EngineLoad | None = None
        self._clock = -math.inf
        self.set_capacity(kv_capacity_tokens)

    # ----- inspection ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._engine)

    @property
    def waiting(self) -> int:
        return len(self._tickets) - len(self._engine)

    @property
    def kv_capacity_tokens(self) -> int | None:
        return self._capacity

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._tickets

    def set_capacity(self, tokens: int | None) -> None:
        if tokens is not None and tokens < 1:
            raise ValueError(f"KV capacity must be >= 1 token, got {tokens!r}")
        self._capacity = tokens
        if self.gate is not None and tokens != self.gate.capacity_tokens:
            self.gate.set_capacity(tokens)

    def reserved_tokens(self) -> int:
        """Rule 4's ``held + reserved`` as of now."""
        reserved = self._held
        for ticket in self._engine.values():
            since_probe = ticket.admitted_at >= self._probe_sent
            reserved += ticket.tokens.total if since_probe else ticket.tokens.reserve
        return reserved

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            queue=self.queue.snapshot(),
            in_flight=len(self._engine),
            window=self.window.size,
            aborted_waiting=self._aborted_waiting,
            aborted_running=self._aborted_running,
            engine_load=self._engine_load,
            gate=self.gate.stats() if self.gate is not None else None,
            kv_capacity_tokens=self._capacity,
            kv_reserved_tokens=self.reserved_tokens(),
            preempted=self._preempted,
        )

    # ----- events ----------------------------------------------------------------------------------

    def enter(
        self, call: QueuedCall, now: float, tokens: CallTokens | None = None, *, resumable: bool = False
    ) -> None:
        """A call arrived (rule 1); ``select`` decides when it runs. Only a ``resumable`` call (the
        shell can stop it and resume it later) is ever preempted (rule 5)."""
        self._advance(now)
        if call.call_id in self._tickets:
            raise ValueError(f"call {call.call_id!r} is already known")
        weight = tokens if tokens is not None else CallTokens(call.size, DEFAULT_OUTPUT_RESERVE)
        call.size = weight.total
        ticket = _Ticket(call, weight, now, wait_start=now, resumable=resumable)
        self._tickets[call.call_id] = ticket
        gate = self.gate
        resident = gate is None or gate.arrive(
            GateCall(
                call.call_id,
                call.program_id,
                call.program_service,
                call.program_wait,
                weight.prompt,
                weight.reserve,
            ),
            now,
        )
        if resident:
            self.queue.add(call, now)
            ticket.where = _QUEUE

    def select(self, now: float) -> tuple[Admission, ...]:
        """Rule 2: gate releases, then admissions from the queue while window and KV allow."""
        self._advance(now)
        gate = self.gate
        if gate is not None:
            release = gate.release(now)
            for call_id in release.recalled:
                ticket = self._tickets[call_id]
                if ticket.where == _QUEUE:
                    self.queue.remove(call_id, now)
                    ticket.where = _GATE
            for call_id in release.released:
                ticket = self._tickets[call_id]
                if ticket.where == _GATE:
                    self.queue.add(ticket.call, now)
                    ticket.where = _QUEUE
        room = self.window.room(len(self._engine))
        if room <= 0:
            return ()
        budget = self._budget(room)
        admissions = self.queue.select_admissions(now, budget)
        if not admissions:
            return ()
        out: list[Admission] = []
        for admission in admissions:
            ticket = self._tickets[admission.call_id]
            ticket.waited += now - ticket.wait_start
            ticket.where = _ENGINE
            ticket.charged = ticket.admitted_at = now
            self._engine[admission.call_id] = ticket
            if gate is not None:
                gate.started(admission.call_id, now)
            out.append(Admission(admission.call_id, admission.program_id, admission.level, ticket.waited))
        return tuple(out)

    def progress(self, call_id: str, generated: int) -> None:
        """The call has generated ``generated`` output tokens so far (all spells); unknown ids are
        ignored. Only abort-and-resume reads it."""
        ticket = self._tickets.get(call_id)
        if ticket is not None:
            ticket.generated = generated

    def no_longer_resumable(self, call_id: str) -> None:
        """The shell can no longer stop and resume the call faithfully (its stream reached its end, or
        showed something a resumed request would not reproduce): rule 5 never picks it again."""
        ticket = self._tickets.get(call_id)
        if ticket is not None:
            ticket.resumable = False

    def preempt(self, now: float) -> tuple[Preemption, ...]:
        """Rule 5: at most one running call to stop now; it is already back in the queue. Shells ask
        after a ``select`` (on their timer ticks), abort the victim in the engine, then ``select``
        again, which admits the call it made room for."""
        self._advance(now)
        params = self.preempt_params
        if params is None or not self._engine:
            return ()
        best = self.queue.best_waiting(now)
        if best is None:
            return ()
        worst_first = self.queue.preemption_order()
        best_key = self.queue.order_key(best)
        multi_level = self.queue.num_levels > 1
        for call_id in worst_first:
            ticket = self._engine[call_id]
            victim = ticket.call
            if not best_key < self.queue.order_key(victim):
                return ()  # the rest rank even better: nobody to stop for it
            if multi_level and victim.level - best.level < params.level_gap:
                return ()
            if (
                not ticket.resumable
                or now - ticket.admitted_at < params.min_run
                or ticket.tokens.reserve - ticket.generated <= params.min_remaining
                or ticket.preemptions >= params.max_preemptions
            ):
                continue
            if not self._fits_without(ticket, best):
                continue
            ticket.preemptions += 1
            self._preempted += 1
            self.requeue(call_id, now)
            return (Preemption(call_id, victim.program_id, victim.level, ticket.generated, best.call_id),)
        return ()

    def _fits_without(self, victim: _Ticket, waiting: QueuedCall) -> bool:
        """Would ``waiting`` be admitted if ``victim`` left the engine (and no other call may go first)?"""
        if self.window.room(len(self._engine) - 1) <= 0:
            return False
        if not self.kv_budget or self._capacity is None:
            return True
        since_probe = victim.admitted_at >= self._probe_sent
        freed = victim.tokens.total if since_probe else victim.tokens.reserve
        free = int(self._capacity * (1.0 - self.kv_headroom)) - self.reserved_tokens() + freed
        return waiting.size <= free

    def requeue(self, call_id: str, now: float) -> bool:
        """A call left the engine without finishing, to be resumed later: it waits in its old place."""
        self._advance(now)
        ticket = self._engine.pop(call_id, None)
        if ticket is None:
            return False
        self._charge(ticket, now)
        self.queue.requeue(call_id, now)
        ticket.where = _QUEUE
        ticket.wait_start = now
        if self.gate is not None:
            self.gate.requeued(call_id, now)
        return True

    def leave(
        self, call_id: str, now: float, completed: bool, usage: CallUsage | None = None
    ) -> Departure | None:
        """The call is over (completed, failed or abandoned); frees its place. Idempotent."""
        self._advance(now)
        ticket = self._tickets.pop(call_id, None)
        if ticket is None:
            return None
        departure: Departure
        if ticket.where == _ENGINE:
            del self._engine[call_id]
            self._charge(ticket, now)
            record = self.queue.finish(call_id, now) if completed else self.queue.remove(call_id, now)
            if not completed:
                self._aborted_running += 1
            departure = Departure(record, True)
        elif completed and ticket.preemptions:
            # Stopped (rule 5) as its stream was ending: the end reached the shell first, so the call
            # finished in the engine after all and is no abort.
            record = self.queue.remove(call_id, now) if ticket.where == _QUEUE else None
            departure = Departure(record, True)
        else:
            record = self.queue.remove(call_id, now) if ticket.where == _QUEUE else None
            self._aborted_waiting += 1
            departure = Departure(record, False)
        if self.gate is not None:
            if usage is None:
                span = now - ticket.admitted_at if departure.was_admitted else 0.0
                self.gate.finished(call_id, now, exec_time=span)
            else:
                self.gate.finished(
                    call_id,
                    now,
                    exec_time=usage.exec_time,
                    prompt_tokens=usage.prompt_tokens,
                    output_tokens=usage.output_tokens,
                    cached_tokens=usage.cached_tokens,
                )
        return departure

    def tick(self, now: float) -> TickResult:
        """Timer: charge service to running calls (demotions), apply due promotions (then ``select``)."""
        self._advance(now)
        charges: list[tuple[str, float]] = []
        for ticket in self._engine.values():  # as _charge, for all at once
            charges.append((ticket.call.call_id, max(0.0, now - ticket.charged)))
            ticket.charged = now
        demotions = self.queue.record_services(charges, now)
        events = self.queue.tick(now)
        return TickResult(events.promotions, tuple(demotions))

    def observe(self, load: EngineLoad, now: float, sent_at: float | None = None) -> WindowChange:
        """A load probe taken at ``sent_at`` (default ``now``) and read at ``now``: adapt the window and
        the KV budget (then ``select``)."""
        self._advance(now)
        self._engine_load = load
        if load.kv_capacity_tokens is not None and load.kv_capacity_tokens != self._capacity:
            self.set_capacity(load.kv_capacity_tokens)
        if load.kv_usage is not None and self._capacity is not None:
            self._held = int(load.kv_usage * self._capacity)
            self._probe_sent = now if sent_at is None else min(sent_at, now)
        backlog = self.waiting
        return self.window.observe(load, len(self._engine), backlog, now)

    # ----- internals -------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if now < self._clock:
            raise ValueError(f"the clock went backwards: now={now!r} after {self._clock!r}")
        self._clock = now

    def _charge(self, ticket: _Ticket, now: float) -> Demotion | None:
        seconds = max(0.0, now - ticket.charged)
        ticket.charged = now
        return self.queue.record_service(ticket.call.call_id, seconds, now)

    def _budget(self, room: int) -> Budget:
        if not self.kv_budget or self._capacity is None:
            return Budget(room, None, force_first=False)
        free = int(self._capacity * (1.0 - self.kv_headroom)) - self.reserved_tokens()
        return Budget(room, max(free, 0), force_first=not self._engine)


@dataclass(slots=True)
class Budget:
    """Fits predicate: ``calls`` more calls and ``size`` more KV tokens (None: unlimited); the simulation's
    engine-integrated mode fills its batches with the same predicate."""

    calls: int
    size: int | None
    force_first: bool = False  # an empty engine takes its first call whatever its size

    def __call__(self, call: QueuedCall) -> bool:
        if self.calls <= 0:
            return False
        if self.size is not None:
            if call.size > self.size and not self.force_first:
                return False
            self.size -= call.size
        self.force_first = False
        self.calls -= 1
        return True
