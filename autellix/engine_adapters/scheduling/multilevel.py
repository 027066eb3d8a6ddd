"""The discretised multi-level queue of Autellix §4 (reference.md §1), shared by plas, atlas, mlfq, fcfs.

Theory of operation
-------------------
K levels cover attained service (seconds of engine execution) with half-open ranges ``[lo_i, hi_i)``,
``lo_0 = 0``, ``hi_{K-1} = inf``; level 0 is the top (served first).

1. Placement: a new call enters the level chosen by the policy (PLAS/ATLAS: the level whose range holds
   the program's service given at arrival; MLFQ: always level 0; FCFS: the only level) with a fresh
   quantum.
2. Order: ``(level, entry_seq)``; FIFO inside a level by entry into it (see base.py for the rest).
3. Demotion: a running call whose ``quantum_used`` reaches its level's quantum moves one level down to
   the tail of that level; execution beyond the quantum carries over, so a report of 3 s at once demotes
   exactly as thirty reports of 0.1 s would. The last level never demotes.
4. Anti-starvation: a *waiting* call below the top is promoted to the tail of level 0 as soon as
   ``(W_p + W_c) / max(T_p + T_c, service_floor) >= beta``; the promotion resets only the call's own
   W_c, T_c (and its quantum). W_c grows linearly while the call waits, so the moment a call becomes due
   is known when it starts waiting; a second heap keyed by that deadline makes every tick
   O(promotions · log n) instead of a scan of all waiting calls. Promotions are applied at ``tick`` and
   at the start of every selection, so a decision never sees an overdue call below the top; a call
   that ``schedule_batch`` preempts starts waiting at the end of that step and is judged at the next.
5. The T = 0 guard is ``service_floor``: the ratio's denominator is at least ``service_floor`` seconds,
   so a call that has no service yet is promoted after ``beta * service_floor`` seconds of wait, not on
   the first tick after it waited a microsecond (which a literal infinite ratio would do), and nothing
   is ever divided by zero.

Defaults (the paper gives none; all are parameters) for an A100 running Llama-3-8B, where a decode step
takes 10-30 ms and one call of 30-300 output tokens executes for 0.3-9 s:

- ``boundaries = (0, 0.5, 1, 2, 4, 8, 16, 32)`` s, K = 8, doubling. Program service spans ~0.5 s (one
  tool-use call, BFCL's 34 tokens) to tens of seconds (a ShareGPT conversation of ~7 calls of ~280
  tokens, or the critical path of a LATS tree); doubling gives every factor of two its own level over
  that span, and only programs past 32 s (long conversations) share the bottom FIFO.
- ``quanta = None``: each level's quantum is its width (0.5, 0.5, 1, 2, 4, 8, 16, inf), so a call's
  level tracks ``program service + own service`` to within one level, and a short call of a fresh
  program (<= 0.5 s, ~25-50 decode steps) finishes inside the top quantum without being demoted. Wider
  top quanta keep preemption churn (recompute costs a prefill) rare in the engine-integrated mode.
- ``beta = 10``: promotion means the program has waited ten times as long as it was served (slowdown
  above 11). Under healthy load typical slowdowns stay well below that, so promotions are rare and
  PLAS's ordering is left alone; yet no call waits longer than ~``beta`` times its service before it
  is at the top. Smaller beta drifts towards FCFS; ``None`` disables promotion.
- ``service_floor = 0.1`` s: a few decode steps, the smallest service figure that means anything; a
  call with no service yet waits at most ``beta * 0.1 = 1`` s below the top.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .base import OrderKey, QueuePolicy
from .calls import Demotion, Promotion, QueuedCall

DEFAULT_BOUNDARIES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass(frozen=True, slots=True)
class MultiLevelParams:
    """Level ladder and anti-starvation settings (defaults and their reasons: module docstring)."""

    boundaries: tuple[float, ...] = DEFAULT_BOUNDARIES  # lower bounds lo_i in seconds; lo_0 = 0
    quanta: tuple[float, ...] | None = None  # seconds per level; None = level widths (last: inf)
    beta: float | None = 10.0  # promote when (W_p + W_c) / max(T_p + T_c, floor) >= beta; None = off
    service_floor: float = 0.1  # seconds; the T = 0 guard

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        bounds = self.boundaries
        if not bounds or bounds[0] != 0.0:
            raise ValueError(f"boundaries must start at 0, got {bounds!r}")
        if any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"boundaries must be finite and strictly increasing, got {bounds!r}")
        if self.quanta is not None:
            object.__setattr__(self, "quanta", tuple(float(q) for q in self.quanta))
            assert self.quanta is not None
            if len(self.quanta) != len(bounds):
                raise ValueError(f"quanta needs {len(bounds)} values (one per level), got {len(self.quanta)}")
            if any(not q > 0 for q in self.quanta):
                raise ValueError(f"quanta must be > 0, got {self.quanta!r}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0 or null, got {self.beta!r}")
        if not (math.isfinite(self.service_floor) and self.service_floor > 0):
            raise ValueError(f"service_floor must be a finite number > 0, got {self.service_floor!r}")

    def resolved_quanta(self) -> tuple[float, ...]:
        """Quantum of each level; the last level's is infinite whatever was configured."""
        if self.quanta is not None:
            return (*self.quanta[:-1], math.inf)
        bounds = self.boundaries
        return (*(hi - lo for lo, hi in itertools.pairwise(bounds)), math.inf)


class MultiLevelQueue(QueuePolicy):
    """K FIFO levels with quantum demotion and beta promotion; placement by program service."""

    def __init__(self, ladder: MultiLevelParams, params: object = None) -> None:
        super().__init__(len(ladder.boundaries))
        self.ladder = ladder
        self.params = ladder if params is None else params
        self._bounds = ladder.boundaries
        self._quanta = ladder.resolved_quanta()
        self._beta = ladder.beta
        self._floor = ladder.service_floor
        self._due: list[tuple[float, int, str]] = []  # (promotion deadline, stamp, call id)

    def level_for_service(self, service: float) -> int:
        """Index of the level whose ``[lo, hi)`` holds ``service``."""
        return bisect.bisect_right(self._bounds, service) - 1

    def quantum(self, level: int) -> float:
        return self._quanta[level]

    def order_key(self, call: QueuedCall) -> OrderKey:
        return (call.level, call.entry_seq)

    def starvation_ratio(self, call: QueuedCall, now: float) -> float:
        """``(W_p + W_c) / max(T_p + T_c, service_floor)`` as of ``now``."""
        served = max(call.program_service + call.call_service, self._floor)
        return (call.program_wait + call.wait_at(now)) / served

    def _initial_level(self, call: QueuedCall) -> int:
        return self.level_for_service(call.program_service)

    def record_services(self, charges: Sequence[tuple[str, float]], now: float) -> list[Demotion]:
        """The base's loop with rule 3's test inlined: ``_after_service`` only for a call that reached
        its quantum (a sidecar tick charges every running call; few are due)."""
        self._advance(now)
        running = self._running
        quanta = self._quanta
        last = self._num_levels - 1
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
            used = call.quantum_used + seconds
            call.quantum_used = used
            if call.level < last and used >= quanta[call.level]:
                demotion = self._after_service(call, now)
                if demotion is not None:
                    demotions.append(demotion)
        return demotions

    def _after_service(self, call: QueuedCall, now: float) -> Demotion | None:
        start = level = call.level
        used = call.quantum_used
        last = self._num_levels - 1
        while level < last and used >= self._quanta[level]:
            used -= self._quanta[level]
            level += 1
        if level == start:
            return None
        self._move_level(call, level)
        call.quantum_used = used
        self._demoted += 1
        return Demotion(call.call_id, start, level)

    def _on_wait_start(self, call: QueuedCall, now: float) -> None:
        if self._beta is None or call.level == 0:
            return
        if len(self._due) > 2 * len(self._waiting) + 64:
            self._rebuild_due()
        heapq.heappush(self._due, (self._deadline(call), call.stamp, call.call_id))

    def _deadline(self, call: QueuedCall) -> float:
        """The ``now`` at which the waiting ``call``'s ratio reaches beta (fixed during a waiting spell)."""
        assert self._beta is not None
        served = max(call.program_service + call.call_service, self._floor)
        return call.waiting_since + self._beta * served - call.program_wait - call.call_wait

    def _promote_due(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, stamp, call_id = heapq.heappop(due)
            call = self._waiting.get(call_id)
            if call is None or call.stamp != stamp or call.level == 0:
                continue
            ratio = self.starvation_ratio(call, now)
            spell = now - call.waiting_since
            call.total_wait += spell
            call.waiting_since = now
            call.call_wait = 0.0
            call.call_service = 0.0
            call.promotions += 1
            from_level = call.level
            self._move_level(call, 0)
            self._promoted += 1
            self._unreported.append(Promotion(call_id, from_level, ratio))

    def _rebuild_due(self) -> None:
        self._due = [(self._deadline(c), c.stamp, c.call_id) for c in self._waiting.values() if c.level > 0]
        heapq.heapify(self._due)
