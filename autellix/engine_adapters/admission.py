"""The admission window: how many calls the sidecar lets into its engine at once (pure code).

Why a window at all (reference.md §4, §6)
-----------------------------------------
An engine serves its own waiting requests first come, first served (vLLM's FCFS policy; under its
priority policy a waiting request still never preempts a running one when ``max_num_seqs`` is the
limit). Every call the sidecar hands over too early is therefore ordered by the *engine*, not by our
PLAS/ATLAS queue. Hand over too few and the engine's batch runs below capacity. The window is the
number of calls in flight (admitted by us, not yet finished) that keeps the batch full plus a small
*overprovision* slack, so that when one call finishes the engine already holds the next one and no
step is lost waiting for our reaction. Every other call waits in our queue, in our order.

Theory of operation
-------------------
The shell counts its calls in flight; it admits while ``room(in_flight) > 0`` and re-evaluates at every
admission opportunity (a call arrives, a call finishes, a probe result, a timer tick). The window
itself changes only on a load probe of the engine (running count ``R``, waiting count ``Q``, KV-cache
usage), by these rules, applied in order. The target is ``Q == overprovision`` while our queue has a
backlog: the batch is full and exactly the slack waits behind it.

1. Fixed mode: the window is ``maximum`` and never moves (for engines that expose no load, or for an
   operator who knows the engine's batch size).
2. Congestion: the engine queues more than the slack (``Q > overprovision``) on ``congestion_probes``
   consecutive probes. Its capacity is what it runs, so the window snaps down to
   ``max R over those probes + overprovision`` (never up) and slow start ends. One probe is not
   enough, and the largest ``R`` of the run is used, because probes can catch a transient: when a group
   of calls finishes together, their replacements sit in the engine's queue until its next step
   (10-30 ms) while ``R`` is momentarily low. If the engine runs more than the window allows (other
   clients' traffic), the target is above the window and nothing shrinks: shrinking would only hand
   the engine's slots to that traffic.
3. Growth: the window is the binding limit (``in_flight >= size`` and calls wait in our queue), the
   engine has seen every call we admitted (``R + Q >= in_flight``: the probe is not older than our
   last admissions, whose requests may still be in transit), it holds fewer ready calls than the slack
   (``Q < overprovision``; ``Q == 0`` when the slack is 0) and its KV cache is below
   ``kv_high_watermark``. Then more calls can run or wait: double the window while in slow start
   (finds a batch of 256 from 8 in five probes), afterwards add one per probe (probes gently, like TCP
   after its first loss; this also recovers a window that a transient made too small).
4. Otherwise the window holds; in particular at the target ``Q == overprovision``.
5. ``minimum <= size <= maximum`` always; ``maximum`` is the operator's bound on calls in flight.

Why a target on the engine's waiting count rather than plain AIMD on latency: the waiting count is the
quantity the window exists to control (it is exactly the number of our calls that the engine orders
instead of us), it is exported by vLLM, SGLang and the simulated engine alike, and a snap to the
observed batch size converges in one step where multiplicative decrease would oscillate around it.
Why a slack of 2 by default: the engine starts its next step as soon as the last one ends, so a call
that finishes is replaced in the batch only by one already waiting inside the engine; the slack covers
the calls that finish in one step, and every call beyond it would be ordered by the engine, not by us.
Measured on the simulated engine (benchmarks/bench_sidecar_throughput.py, batch 16, calls of 8-40
tokens): a slack of 0 costs ~7% of a saturated engine's throughput, a slack of 2 none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One load probe of the engine, as an adapter read it."""

    running: int  # requests in the engine's batch
    waiting: int  # requests queued inside the engine
    kv_usage: float | None = None  # KV-cache usage in [0, 1], None if the engine does not say
    preemptions: float | None = None  # cumulative preemptions, where the engine exports them
    kv_capacity_tokens: int | None = None  # the engine's KV cache size (blocks x block size), where it says


@dataclass(frozen=True, slots=True)
class WindowParams:
    """Bounds and tuning of the window (defaults and reasons: module docstring)."""

    initial: int = 8  # start small: calls the engine queues before the first probe are out of our hands
    minimum: int = 1
    maximum: int = 256  # vLLM's max_num_seqs on A100-class GPUs; the operator's bound on calls in flight
    overprovision: int = 2  # calls ready in the engine behind a full batch: replaces finishers at once
    adaptive: bool = True  # False: the window is ``maximum``, always
    congestion_probes: int = 2  # consecutive probes with Q > overprovision before the window snaps down
    kv_high_watermark: float = 0.95  # no growth above this KV usage: more calls would be preempted

    def __post_init__(self) -> None:
        if self.minimum < 1:
            raise ValueError(f"minimum window must be >= 1, got {self.minimum}")
        if self.maximum < self.minimum:
            raise ValueError(f"maximum window {self.maximum} is below the minimum {self.minimum}")
        if not self.minimum <= self.initial <= self.maximum:
            raise ValueError(f"initial window {self.initial} must lie in [{self.minimum}, {self.maximum}]")
        if self.overprovision < 0:
            raise ValueError(f"overprovision must be >= 0, got {self.overprovision}")
        if self.congestion_probes < 1:
            raise ValueError(f"congestion_probes must be >= 1, got {self.congestion_probes}")
        if not (math.isfinite(self.kv_high_watermark) and 0 < self.kv_high_watermark <= 1):
            raise ValueError(f"kv_high_watermark must be in (0, 1], got {self.kv_high_watermark}")


WindowAction = Literal["hold", "grow", "shrink"]


@dataclass(frozen=True, slots=True)
class WindowChange:
    """What one probe did to the window, and why (for logs and tests)."""

    before: int
    after: int
    action: WindowAction
    reason: str


class AdmissionWindow:
    """The adaptive bound on calls in flight (rules in the module docstring)."""

    def __init__(self, params: WindowParams | None = None) -> None:
        self.params = params if params is not None else WindowParams()
        self._size = self.params.initial if self.params.adaptive else self.params.maximum
        self._slow_start = True
        self._congested_run = 0
        self._run_peak = 0  # largest running count seen during the current congestion run
        self._clock = -math.inf

    @property
    def size(self) -> int:
        return self._size

    @property
    def slow_start(self) -> bool:
        return self._slow_start

    def room(self, in_flight: int) -> int:
        """How many more calls may be admitted now."""
        return max(0, self._size - in_flight)

    def observe(self, load: EngineLoad, in_flight: int, backlog: int, now: float) -> WindowChange:
        """Apply one probe: ``in_flight`` calls are ours in the engine, ``backlog`` wait in our queue."""
        if not math.isfinite(now) or now < self._clock:
            raise ValueError(f"now must be finite and not go backwards: {now!r} after {self._clock!r}")
        self._clock = now
        params = self.params
        before = self._size
        if not params.adaptive:
            return WindowChange(before, before, "hold", "fixed window")
        if load.waiting > params.overprovision:
            self._congested_run += 1
            self._run_peak = max(self._run_peak, load.running) if self._congested_run > 1 else load.running
            if self._congested_run < params.congestion_probes:
                return WindowChange(before, before, "hold", "engine queueing: waiting for confirmation")
            self._slow_start = False
            target = max(params.minimum, min(params.maximum, self._run_peak + params.overprovision))
            if target < before:
                self._size = target
                return WindowChange(before, target, "shrink", "engine queueing: snap to its batch + slack")
            return WindowChange(before, before, "hold", "engine queueing, not because of our window")
        self._congested_run = 0
        if backlog <= 0 or in_flight < before:
            return WindowChange(before, before, "hold", "window not binding")
        if load.running + load.waiting < in_flight:
            return WindowChange(before, before, "hold", "probe predates our admissions")
        if load.waiting >= max(params.overprovision, 1):
            return WindowChange(before, before, "hold", "steady: engine holds the slack")
        if load.kv_usage is not None and load.kv_usage >= params.kv_high_watermark:
            return WindowChange(before, before, "hold", "KV cache near full")
        if before >= params.maximum:
            return WindowChange(before, before, "hold", "at the configured maximum")
        grown = before * 2 if self._slow_start else before + 1
        self._size = min(params.maximum, grown)
        reason = "slow start: engine takes all we send" if self._slow_start else "probe for capacity"
        return WindowChange(before, self._size, "grow", reason)
