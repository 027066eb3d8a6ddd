"""``fcfs``: one FIFO in order of arrival at this queue (the vLLM baseline; reference.md §2).

Theory of operation: the multi-level queue with a single level ``[0, inf)``, no demotion and no
anti-starvation (FIFO cannot starve anyone). Order is ``entry_seq``, i.e. the order of ``add``; a
preempted call keeps its sequence number and so goes back to the front, as in vLLM's FCFS queue.
Program service and wait are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from .multilevel import MultiLevelParams, MultiLevelQueue
from .registry import register_policy


@register_policy("fcfs")
class FcfsQueue(MultiLevelQueue):
    """First come, first served."""

    @dataclass(frozen=True, slots=True)
    class Params:
        """FCFS has nothing to tune."""

    def __init__(self, params: FcfsQueue.Params | None = None) -> None:
        own = params if params is not None else FcfsQueue.Params()
        super().__init__(MultiLevelParams(boundaries=(0.0,), beta=None), own)
