"""Plain data of the local queue: the call record it keeps and the decisions it returns.

A :class:`QueuedCall` is built by the shell (sidecar or simulation) from what the proxy sent with the
call; the fields after ``remaining_work`` are the queue's own counters and are reset by ``add``.
Everything a policy *decides* comes back as a frozen, slotted dataclass (:class:`Admission`,
:class:`Demotion`, :class:`Promotion`, :class:`BatchPlan`, :class:`QueueEvents`, :class:`QueueStats`),
so a shell can log, export or compare decisions without reaching into the queue.

Counters kept per call (reference.md §1, anti-starvation):

1. ``call_wait`` (W_c) grows only while the call waits in our queue; ``call_service`` (T_c) grows only
   through ``record_service``. A promotion resets both to 0 (the paper resets only the call's counters).
2. ``total_wait`` / ``total_service`` grow the same way but are never reset: they are what the sidecar
   reports back to the proxy, so a promotion never makes a call's measured wait disappear.
3. ``quantum_used`` is the execution time spent at the current level; it restarts at 0 on every level
   change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class QueuedCall:
    """One call known to a local queue (waiting in it or admitted into the engine)."""

    call_id: str
    program_id: str
    thread_id: str | None = None
    arrival: float = 0.0  # the shell's timestamp; informational, ordering uses the queue's own sequence
    program_service: float = 0.0  # program's attained service at arrival (PLAS sum or ATLAS S), seconds
    program_wait: float = 0.0  # program's accumulated waiting time at arrival, seconds
    size: int = 1  # what the shell's fit predicate weighs (e.g. prompt tokens); opaque to the queue
    remaining_work: float | None = None  # seconds of execution left; known to the simulation only (srpt)
    # --- maintained by the queue (reset by add) ---
    level: int = field(default=0, init=False)
    call_wait: float = field(default=0.0, init=False)  # W_c, reset on promotion
    call_service: float = field(default=0.0, init=False)  # T_c, reset on promotion
    quantum_used: float = field(default=0.0, init=False)
    total_wait: float = field(default=0.0, init=False)  # never reset: reported to the proxy
    total_service: float = field(default=0.0, init=False)
    running: bool = field(default=False, init=False)
    waiting_since: float = field(default=0.0, init=False)  # meaningful only while not running
    entry_seq: int = field(default=-1, init=False)  # FIFO position within the level; unique per entry
    stamp: int = field(default=-1, init=False)  # identifies the live heap entry; older entries are stale
    promotions: int = field(default=0, init=False)

    def wait_at(self, now: float) -> float:
        """W_c as of ``now`` (the stored value plus the current waiting spell)."""
        if self.running:
            return self.call_wait
        return self.call_wait + max(0.0, now - self.waiting_since)

    def total_wait_at(self, now: float) -> float:
        """Queue wait since the call was added, never reset (what the proxy should be told)."""
        if self.running:
            return self.total_wait
        return self.total_wait + max(0.0, now - self.waiting_since)


Fits = Callable[[QueuedCall], bool]
"""Capacity predicate: called once per candidate, in priority order; True means "take it".

A predicate may keep a budget and deduct from it when it answers True (see :class:`CapacityBudget`).
It must not mutate the call. The scan stops at the first False (reference.md §1: no skipping ahead).
"""


@dataclass(slots=True)
class CapacityBudget:
    """A ready-made :data:`Fits` for the sidecar: room for ``calls`` more calls and ``size`` more units.

    ``size=None`` means only the call count limits admission.
    """

    calls: int
    size: int | None = None

    def __call__(self, call: QueuedCall) -> bool:
        if self.calls <= 0:
            return False
        if self.size is not None:
            if call.size > self.size:
                return False
            self.size -= call.size
        self.calls -= 1
        return True


@dataclass(frozen=True, slots=True)
class Admission:
    """A waiting call chosen to enter the engine now."""

    call_id: str
    program_id: str
    level: int  # the queue level it was taken from (the shell may map it onto the engine's priority)
    waited: float  # this call's total queue wait so far, seconds (never reset by promotions)


@dataclass(frozen=True, slots=True)
class Demotion:
    """A running call used up its quantum(s) and moved down."""

    call_id: str
    from_level: int
    to_level: int


@dataclass(frozen=True, slots=True)
class Promotion:
    """A starving waiting call was moved to the top level (anti-starvation rule)."""

    call_id: str
    from_level: int
    ratio: float  # (W_p + W_c) / max(T_p + T_c, floor) at the moment of promotion


@dataclass(frozen=True, slots=True)
class QueueEvents:
    """What ``tick`` applied, plus promotions applied inside selections since the previous tick."""

    promotions: tuple[Promotion, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Engine-integrated decision for one step: who runs, who enters, who is preempted."""

    batch: tuple[str, ...]  # call ids that run this step, best first (running and newly admitted)
    admitted: tuple[Admission, ...]  # waiting calls that entered the batch
    preempted: tuple[str, ...]  # running calls that lost their place, worst first; now waiting again
    blocked_by: str | None  # the call the scan stopped at (did not fit), None if everything fit


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for the shell to export as metrics (the policy keeps no metrics of its own)."""

    waiting_per_level: tuple[int, ...]
    running_per_level: tuple[int, ...]
    added: int
    admitted: int
    demoted: int
    promoted: int
    requeued: int
    finished: int
    removed: int

    @property
    def waiting(self) -> int:
        return sum(self.waiting_per_level)

    @property
    def running(self) -> int:
        return sum(self.running_per_level)


def check_time(value: float, what: str) -> float:
    """Reject NaN, infinities and negative durations with a message that names the value."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value
