"""``srpt``: shortest remaining processing time, the clairvoyant reference (reference.md §1, the paper's
"gap to clairvoyant SRPT"). Only the simulation can run it: it needs each call's true execution time.

Theory of operation:

1. The shell sets ``QueuedCall.remaining_work`` (seconds of execution the call still needs) at ``add``;
   a call without it is rejected.
2. Order: ``(remaining_work - service recorded so far, entry_seq)``, so the call closest to done goes
   first and ties fall back to arrival order. A waiting call's key is constant (it gets no service), so
   the waiting heap stays valid; a running call's key shrinks as it runs, which is what makes
   ``schedule_batch`` preempt the running call with the *most* work left when a shorter one arrives.
3. One level, no demotion, no anti-starvation: SRPT is the optimum for mean response time, and the
   reference point is only useful if left unmodified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import OrderKey, QueuePolicy
from .calls import QueuedCall
from .registry import register_policy


@register_policy("srpt")
class SrptQueue(QueuePolicy):
    """Least remaining work first (clairvoyant)."""

    @dataclass(frozen=True, slots=True)
    class Params:
        """SRPT has nothing to tune."""

    def __init__(self, params: SrptQueue.Params | None = None) -> None:
        super().__init__(num_levels=1)
        self.params = params if params is not None else SrptQueue.Params()

    @staticmethod
    def remaining(call: QueuedCall) -> float:
        """Work left, seconds: what was declared at ``add`` minus the service recorded since."""
        assert call.remaining_work is not None
        return max(call.remaining_work - call.total_service, 0.0)

    def order_key(self, call: QueuedCall) -> OrderKey:
        return (self.remaining(call), call.entry_seq)

    def _initial_level(self, call: QueuedCall) -> int:
        work = call.remaining_work
        if work is None or not math.isfinite(work) or work < 0:
            raise ValueError(
                f"srpt needs remaining_work (finite, >= 0) for call {call.call_id!r}, got {work!r}"
            )
        return 0
