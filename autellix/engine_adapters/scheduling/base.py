"""The queue-policy interface and the bookkeeping every policy shares.

Theory of operation (reference.md §1, DESIGN.md §2; the shape follows vLLM's ``request_queue.py``)
-------------------------------------------------------------------------------------------------
A policy holds calls in two disjoint sets: *waiting* (in our queue) and *running* (admitted into the
engine). A policy differs from another only in three hooks: where a new call is placed
(``_initial_level``), how calls are ordered (``order_key``) and what service does to a call
(``_after_service``; demotion in the multi-level queue), plus two anti-starvation hooks
(``_on_wait_start``, ``_promote_due``). Everything else lives here, once:

1. Every call is in exactly one of waiting/running from ``add`` until ``finish``/``remove``.
2. ``order_key(call)`` is a total order: the last component is ``entry_seq``, a counter that the queue
   increments for every entry into a level, so no two live calls ever compare equal and no decision
   depends on dict or hash order. Lower key = better.
3. One ordering decides everything: admission scans the waiting calls best first; the engine-integrated
   ``schedule_batch`` scans running and waiting calls merged best first; preemption victims are the
   running calls past the stop point, reported worst first; ``preemption_order`` lists running calls
   worst first for a sidecar that preempts by abort.
4. A scan stops at the first call that the capacity predicate rejects; it never skips to a smaller one
   (the paper's rule; it keeps a large call from starving behind a stream of small ones). A shell must
   therefore reject a call that could never fit in an empty engine, or it would block the queue.
5. Waiting calls sit in a binary heap keyed by ``order_key`` with lazy deletion: an entry is live only if
   its stamp equals the call's current stamp. A waiting call's key never changes in place (a level
   change re-pushes it under a new stamp), so the heap stays valid; it is rebuilt when stale entries
   outnumber live ones. Running calls are few (the engine's batch) and are sorted on demand.
6. Time is only what the caller passes as ``now``; it must never go backwards (ValueError). W_c of a
   waiting call is ``call_wait + (now - waiting_since)``, so waiting costs no per-tick work.
7. A requeued (preempted) call keeps its level, ``entry_seq`` and counters, so it returns to its old place
   in the order, ahead of calls that entered its level after it (vLLM also puts preempted requests back
   in front).
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from .calls import Admission, BatchPlan, Demotion, Fits, Promotion, QueuedCall, QueueEvents, QueueStats

OrderKey = tuple[float, int]


class QueuePolicy(ABC):
    """A local queue: placement, ordering, admission, preemption victims, service accounting."""

    name: ClassVar[str] = ""  # set by the registration decorator
    Params: ClassVar[type[Any]]  # each policy's frozen parameter dataclass
    params: Any  # the instance of ``Params`` this policy runs with

    def __init__(self, num_levels: int) -> None:
        self._num_levels = num_levels
        self._waiting: dict[str, QueuedCall] = {}
        self._running: dict[str, QueuedCall] = {}
        self._heap: list[tuple[OrderKey, int, str]] = []
        self._next_seq = 0
        self._next_stamp = 0
        self._clock = -math.inf
        self._waiting_per_level = [0] * num_levels
        self._running_per_level = [0] * num_levels
        self._unreported: list[Promotion] = []
        self._added = self._admitted = self._demoted = self._promoted = 0
        self._requeued = self._finished = self._removed = 0

    # ----- hooks -------------------------------------------------------------------------------------

    @abstractmethod
    def order_key(self, call: QueuedCall) -> OrderKey:
        """Sort key of a call as of now: lower is served first and preempted last."""

    @abstractmethod
    def _initial_level(self, call: QueuedCall) -> int:
        """Level of a call that has just been added (its counters are already reset)."""

    def _after_service(self, call: QueuedCall, now: float) -> Demotion | None:
        """React to service recorded for a running call (the counters are already updated)."""
        return None

    def _on_wait_start(self, call: QueuedCall, now: float) -> None:  # noqa: B027 - optional hook
        """A call (re)entered the waiting set at ``now`` (used to schedule anti-starvation)."""

    def _promote_due(self, now: float) -> None:  # noqa: B027 - optional hook
        """Apply the promotions that are due at ``now`` (no-op without anti-starvation)."""

    # ----- the interface the shells call ----------------------------------------------------------

    @property
    def num_levels(self) -> int:
        return self._num_levels

    def add(self, call: QueuedCall, now: float) -> int:
        """Enqueue a new call as waiting; returns the level it was placed at."""
        self._advance(now)
        if call.call_id in self._waiting or call.call_id in self._running:
            raise ValueError(f"call {call.call_id!r} is already queued")
        for what in ("program_service", "program_wait"):
            value = getattr(call, what)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{what} of call {call.call_id!r} must be finite and >= 0, got {value!r}")
        call.call_wait = call.call_service = call.quantum_used = 0.0
        call.total_wait = call.total_service = 0.0
        call.running = False
        call.promotions = 0
        call.level = self._initial_level(call)
        call.entry_seq = self._take_seq()
        call.waiting_since = now
        self._waiting[call.call_id] = call
        self._waiting_per_level[call.level] += 1
        self._push(call)
        self._added += 1
        self._on_wait_start(call, now)
        return call.level

    def select_admissions(self, now: float, fits: Fits) -> tuple[Admission, ...]:
        """Sidecar mode: admit waiting calls best first while ``fits`` says yes; marks them running."""
        self._advance(now)
        self._promote_due(now)
        admitted: list[Admission] = []
        while (call := self._peek_waiting()) is not None and fits(call):
            admitted.append(self._admit_top(call, now))
        return tuple(admitted)

    def schedule_batch(self, now: float, fits: Fits) -> BatchPlan:
        """Engine mode: form this step's batch from running and waiting calls merged best first.

        ``fits`` is asked about running calls too (with ``call.running`` set), so the simulation can
        weigh what each already holds. Running calls past the stop point are preempted: they become
        waiting again with their counters kept and are returned worst first.
        """
        self._advance(now)
        self._promote_due(now)
        running = sorted(self._running.values(), key=self.order_key)
        running_keys = [self.order_key(c) for c in running]
        batch: list[str] = []
        admitted: list[Admission] = []
        blocked_by: str | None = None
        kept = 0
        while True:
            waiting = self._peek_waiting()
            best_running = running[kept] if kept < len(running) else None
            if waiting is None and best_running is None:
                break
            take_running = best_running is not None and (
                waiting is None or running_keys[kept] < self._heap[0][0]
            )
            candidate = best_running if take_running else waiting
            assert candidate is not None
            if not fits(candidate):
                blocked_by = candidate.call_id
                break
            if take_running:
                kept += 1
            else:
                admitted.append(self._admit_top(candidate, now))
            batch.append(candidate.call_id)
        victims = running[kept:][::-1]
        for victim in victims:
            self._to_waiting(victim, now)
        return BatchPlan(tuple(batch), tuple(admitted), tuple(v.call_id for v in victims), blocked_by)

    def record_service(self, call_id: str, seconds: float, now: float) -> Demotion | None:
        """A running call executed for ``seconds`` more; may demote it. Unknown ids are ignored
        (a late report after finish/remove); a waiting call is an error."""
        self._advance(now)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"service seconds must be finite and >= 0, got {seconds!r}")
        call = self._running.get(call_id)
        if call is None:
            if call_id in self._waiting:
                raise ValueError(f"call {call_id!r} is waiting, not running: it cannot receive service")
            return None
        call.call_service += seconds
        call.total_service += seconds
        call.quantum_used += seconds
        return self._after_service(call, now)

    def record_services(self, charges: Sequence[tuple[str, float]], now: float) -> list[Demotion]:
        """:meth:`record_service` for each ``(call_id, seconds)`` in order (a sidecar tick charges every
        running call at once); the demotions, in that order."""
        self._advance(now)
        running = self._running
        after = self._after_service
        demotions: list[Demotion] = []
        for call_id, seconds in charges:
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"service seconds must be finite and >= 0, got {seconds!r}")
            call = running.get(call_id)
            if call is None:
                if call_id in self._waiting:
                    raise ValueError(f"call {call_id!r} is waiting, not running: it cannot receive service")
                continue
            call.call_service += seconds
            call.total_service += seconds
            call.quantum_used += seconds
            demotion = after(call, now)
            if demotion is not None:
                demotions.append(demotion)
        return demotions

    def requeue(self, call_id: str, now: float) -> bool:
        """A running call left the engine without finishing (preempted, aborted for resume): it waits
        again in its old place. Returns False if the call was not running."""
        self._advance(now)
        call = self._running.get(call_id)
        if call is None:
            return False
        self._to_waiting(call, now)
        return True

    def finish(self, call_id: str, now: float) -> QueuedCall | None:
        """A running call completed; returns its record (``total_wait``/``total_service`` final)."""
        self._advance(now)
        call = self._running.pop(call_id, None)
        if call is None:
            if call_id in self._waiting:
                raise ValueError(f"call {call_id!r} is waiting, not running: use remove()")
            return None
        call.running = False
        self._running_per_level[call.level] -= 1
        self._finished += 1
        return call

    def remove(self, call_id: str, now: float) -> QueuedCall | None:
        """Drop a call wherever it is (client gone, aborted); returns its record or None if unknown."""
        self._advance(now)
        call = self._waiting.pop(call_id, None)
        if call is not None:
            self._waiting_per_level[call.level] -= 1
            spell = now - call.waiting_since
            call.call_wait += spell
            call.total_wait += spell
        else:
            call = self._running.pop(call_id, None)
            if call is None:
                return None
            call.running = False
            self._running_per_level[call.level] -= 1
        self._removed += 1
        return call

    def tick(self, now: float) -> QueueEvents:
        """Timer: apply the promotions due at ``now``; report every promotion since the last tick."""
        self._advance(now)
        self._promote_due(now)
        events = QueueEvents(promotions=tuple(self._unreported))
        self._unreported.clear()
        return events

    # ----- inspection --------------------------------------------------------------------------------

    def get(self, call_id: str) -> QueuedCall | None:
        return self._waiting.get(call_id) or self._running.get(call_id)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._waiting or call_id in self._running

    def __len__(self) -> int:
        return len(self._waiting) + len(self._running)

    def waiting_order(self) -> tuple[str, ...]:
        """Waiting call ids best first (sorts: for inspection and tests, not for the hot path)."""
        return tuple(c.call_id for c in sorted(self._waiting.values(), key=self.order_key))

    def best_waiting(self, now: float) -> QueuedCall | None:
        """The waiting call the next admission would take (due promotions applied first)."""
        self._advance(now)
        self._promote_due(now)
        return self._peek_waiting()

    def running_ids(self) -> tuple[str, ...]:
        """Running call ids best first."""
        return tuple(c.call_id for c in sorted(self._running.values(), key=self.order_key))

    def preemption_order(self) -> tuple[str, ...]:
        """Running call ids worst first: the order in which a shell should preempt."""
        return self.running_ids()[::-1]

    def snapshot(self) -> QueueStats:
        return QueueStats(
            waiting_per_level=tuple(self._waiting_per_level),
            running_per_level=tuple(self._running_per_level),
            added=self._added,
            admitted=self._admitted,
            demoted=self._demoted,
            promoted=self._promoted,
            requeued=self._requeued,
            finished=self._finished,
            removed=self._removed,
        )

    # ----- internals shared with the policies ----------------------------------------------------

    def _advance(self, now: float) -> None:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if now < self._clock:
            raise ValueError(f"the clock went backwards: now={now!r} after {self._clock!r}")
        self._clock = now

    def _take_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _push(self, call: QueuedCall) -> None:
        if len(self._heap) > 2 * len(self._waiting) + 64:
            self._rebuild_heap()
        self._next_stamp += 1
        call.stamp = self._next_stamp
        heapq.heappush(self._heap, (self.order_key(call), call.stamp, call.call_id))

    def _peek_waiting(self) -> QueuedCall | None:
        heap = self._heap
        while heap:
            _, stamp, call_id = heap[0]
            call = self._waiting.get(call_id)
            if call is not None and call.stamp == stamp:
                return call
            heapq.heappop(heap)
        return None

    def _admit_top(self, call: QueuedCall, now: float) -> Admission:
        """Move ``call``, which must be the live top of the heap, into the running set."""
        heapq.heappop(self._heap)
        del self._waiting[call.call_id]
        spell = now - call.waiting_since
        call.call_wait += spell
        call.total_wait += spell
        call.running = True
        self._running[call.call_id] = call
        self._waiting_per_level[call.level] -= 1
        self._running_per_level[call.level] += 1
        self._admitted += 1
        return Admission(call.call_id, call.program_id, call.level, call.total_wait)

    def _to_waiting(self, call: QueuedCall, now: float) -> None:
        del self._running[call.call_id]
        call.running = False
        call.waiting_since = now
        self._running_per_level[call.level] -= 1
        self._waiting_per_level[call.level] += 1
        self._waiting[call.call_id] = call
        self._push(call)
        self._requeued += 1
        self._on_wait_start(call, now)

    def _move_level(self, call: QueuedCall, level: int) -> None:
        """Put ``call`` at the tail of ``level`` (demotion of a running call, promotion of a waiting one)."""
        counts = self._running_per_level if call.running else self._waiting_per_level
        counts[call.level] -= 1
        counts[level] += 1
        call.level = level
        call.quantum_used = 0.0
        call.entry_seq = self._take_seq()
        if not call.running:
            self._push(call)

    def _rebuild_heap(self) -> None:
        """Drop stale entries; live keys are unchanged because a waiting call's key never changes."""
        self._heap = [(self.order_key(c), c.stamp, c.call_id) for c in self._waiting.values()]
        heapq.heapify(self._heap)
