"""``mlfq``: the classic multi-level feedback queue baseline of the paper (reference.md §2, "MLFQ").

Theory of operation: the shared multi-level queue (multilevel.py) with one change of rule 1: *every*
new call enters the top level, whatever its program has already received. Demotion by quantum and the
beta anti-starvation rule are the same as for PLAS/ATLAS, so a comparison isolates the one thing the
paper changes: program-aware placement. (This is why MLFQ fills the top level with every new call of
every long program, which the paper blames for its memory blow-up in the offline batch test.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .calls import QueuedCall
from .multilevel import MultiLevelParams, MultiLevelQueue
from .registry import register_policy


@register_policy("mlfq")
class MlfqQueue(MultiLevelQueue):
    """Every new call at the top; demoted one level per quantum used."""

    @dataclass(frozen=True, slots=True)
    class Params(MultiLevelParams):
        """Same fields and defaults as :class:`MultiLevelParams`; ``boundaries`` only set the quanta."""

    def __init__(self, params: MlfqQueue.Params | None = None) -> None:
        super().__init__(params if params is not None else MlfqQueue.Params())

    def _initial_level(self, call: QueuedCall) -> int:
        return 0
