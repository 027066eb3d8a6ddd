"""``program-fcfs``: calls in the order their *programs* arrived (Continuum's program-level FCFS).

Continuum (arXiv 2511.02230) schedules agentic programs first come, first served at the program level,
so a program that has started is finished before a later one gets the engine, and keeps its KV cache
across tool calls. This is the queue half of that idea, for the ``continuum`` comparison preset (the
KV half is the working-set gate in fifo order, scheduling/working_set.py).

Theory of operation: one level, no demotion, no anti-starvation (FIFO by program age cannot starve a
program; a call of an older program always goes first). Order is ``(program age, entry_seq)``, where
program age is the order in which this queue first saw each program; a program forgotten (rule below)
and seen again counts as new. The ages of the most recent 65,536 programs are kept, enough for any
queue this sidecar holds at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .base import OrderKey, QueuePolicy
from .calls import QueuedCall
from .registry import register_policy

_AGES_KEPT = 65536


@register_policy("program-fcfs")
class ProgramFcfsQueue(QueuePolicy):
    """Oldest program first."""

    @dataclass(frozen=True, slots=True)
    class Params:
        """Program-level FCFS has nothing to tune."""

    def __init__(self, params: ProgramFcfsQueue.Params | None = None) -> None:
        super().__init__(num_levels=1)
        self.params = params if params is not None else ProgramFcfsQueue.Params()
        self._ages: OrderedDict[str, int] = OrderedDict()
        self._next_age = 0

    def age(self, program_id: str) -> int:
        age = self._ages.get(program_id)
        if age is None:
            self._next_age += 1
            age = self._ages[program_id] = self._next_age
            if len(self._ages) > _AGES_KEPT:
                self._ages.popitem(last=False)
        return age

    def order_key(self, call: QueuedCall) -> OrderKey:
        return (float(self.age(call.program_id)), call.entry_seq)

    def _initial_level(self, call: QueuedCall) -> int:
        self.age(call.program_id)
        return 0
