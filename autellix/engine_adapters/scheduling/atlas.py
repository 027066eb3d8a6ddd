"""``atlas``: Adaptive Thread-Level Attained Service for multi-threaded programs (Autellix §4.1,
reference.md §1).

Theory of operation: the shared multi-level queue (multilevel.py) placed by the program's critical
path S instead of the PLAS sum. The proxy keeps S per program (``S = max(S, S_at_arrival + exec)`` on
each completion) and passes the value current at arrival in ``QueuedCall.program_service``. Parallel
calls of a program (threads of a tree search, a map step) arrive with the same S, so they land in the
same level, next to each other in FIFO order, and are admitted together, ahead of programs with a
longer critical path; they do not push each other down the way a PLAS sum of all threads would.
The queue-side rules are those of PLAS; what differs is the meaning of the number the proxy sends, and
the anti-starvation ratio then compares the program's wait with its critical path.
"""

from __future__ import annotations

from dataclasses import dataclass

from .multilevel import MultiLevelParams, MultiLevelQueue
from .registry import register_policy


@register_policy("atlas")
class AtlasQueue(MultiLevelQueue):
    """Least attained critical-path service first, discretised into levels."""

    @dataclass(frozen=True, slots=True)
    class Params(MultiLevelParams):
        """Same fields and defaults as :class:`MultiLevelParams` (reasons in multilevel.py)."""

    def __init__(self, params: AtlasQueue.Params | None = None) -> None:
        super().__init__(params if params is not None else AtlasQueue.Params())
