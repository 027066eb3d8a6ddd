"""``plas``: Program-Level Attained Service for single-threaded programs (Autellix §4.1, reference.md §1).

Theory of operation: the shared multi-level queue (multilevel.py) with rule 1 read literally: a new
call enters the level whose ``[lo, hi)`` holds its program's attained service, the sum of the execution
times of the program's earlier *completed* calls, which the proxy reads from the program table when
the call arrives and passes in ``QueuedCall.program_service``. A program that has received less
service is served first, so a short program is not stuck behind a long one (program-level
head-of-line blocking) even when its call arrives later. Within the call, quantum demotion keeps a
long call from blocking short calls of programs at the same level.
"""

from __future__ import annotations

from dataclasses import dataclass

from .multilevel import MultiLevelParams, MultiLevelQueue
from .registry import register_policy


@register_policy("plas")
class PlasQueue(MultiLevelQueue):
    """Least attained program service first, discretised into levels."""

    @dataclass(frozen=True, slots=True)
    class Params(MultiLevelParams):
        """Same fields and defaults as :class:`MultiLevelParams` (reasons in multilevel.py)."""

    def __init__(self, params: PlasQueue.Params | None = None) -> None:
        super().__init__(params if params is not None else PlasQueue.Params())
