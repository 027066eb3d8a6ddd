"""Waiting queues of the simulated engine, one class per vLLM scheduling policy (reference.md §4).

Theory of operation
-------------------
A policy is one ordering, used twice: it decides which waiting request is admitted next and which
running request is preempted when KV blocks run out.

1. FCFS (:class:`FcfsQueue`): admission in submission order; a preempted request goes back to the
   *front*; the victim is the most recently admitted running request (the end of the running list).
2. Priority (:class:`PriorityQueue`): admission by ascending ``(priority, arrival_time, submit
   order)``; a preempted request is re-inserted under its original key; the victim is the running
   request with the largest key. A waiting request never preempts a running one: it only waits.

Requests are any objects with an ``order_key`` tuple; the queues compare nothing else.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Generic, Literal, Protocol, TypeVar

__all__ = ["FcfsQueue", "PriorityQueue", "Queueable", "WaitingQueue", "make_waiting_queue"]


class Queueable(Protocol):
    @property
    def order_key(self) -> tuple[int, float, int]: ...  # (priority, arrival_time, submit order)


R = TypeVar("R", bound=Queueable)


class WaitingQueue(Generic[R]):
    """Interface of a waiting queue plus the policy's choice of preemption victim."""

    __slots__ = ()

    def add(self, request: R) -> None:
        raise NotImplementedError

    def prepend(self, request: R) -> None:
        """Put back a preempted request."""
        raise NotImplementedError

    def peek(self) -> R:
        raise NotImplementedError

    def pop(self) -> R:
        raise NotImplementedError

    def remove(self, request: R) -> None:
        raise NotImplementedError

    def victim_index(self, running: Sequence[R]) -> int:
        """Index in ``running`` (non-empty) of the request to preempt."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[R]:
        """Requests in admission order."""
        raise NotImplementedError


class FcfsQueue(WaitingQueue[R]):
    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[R] = deque()

    def add(self, request: R) -> None:
        self._queue.append(request)

    def prepend(self, request: R) -> None:
        self._queue.appendleft(request)

    def peek(self) -> R:
        return self._queue[0]

    def pop(self) -> R:
        return self._queue.popleft()

    def remove(self, request: R) -> None:
        self._queue.remove(request)

    def victim_index(self, running: Sequence[R]) -> int:
        return len(running) - 1

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[R]:
        return iter(self._queue)


class PriorityQueue(WaitingQueue[R]):
    """A heap with lazy removal (an aborted request is skipped when it reaches the top)."""

    __slots__ = ("_heap", "_removed")

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, int], R]] = []
        self._removed: set[tuple[int, float, int]] = set()

    def add(self, request: R) -> None:
        heapq.heappush(self._heap, (request.order_key, request))

    prepend = add

    def _prune(self) -> None:
        heap = self._heap
        while heap and heap[0][0] in self._removed:
            self._removed.discard(heapq.heappop(heap)[0])

    def peek(self) -> R:
        self._prune()
        return self._heap[0][1]

    def pop(self) -> R:
        self._prune()
        return heapq.heappop(self._heap)[1]

    def remove(self, request: R) -> None:
        self._removed.add(request.order_key)

    def victim_index(self, running: Sequence[R]) -> int:
        worst = 0
        worst_key = running[0].order_key
        for i in range(1, len(running)):
            key = running[i].order_key
            if key > worst_key:
                worst, worst_key = i, key
        return worst

    def __len__(self) -> int:
        return len(self._heap) - len(self._removed)

    def __iter__(self) -> Iterator[R]:
        removed = self._removed
        return iter([r for key, r in sorted(self._heap, key=lambda e: e[0]) if key not in removed])


def make_waiting_queue(policy: Literal["fcfs", "priority"]) -> WaitingQueue[R]:
    if policy == "fcfs":
        return FcfsQueue()
    if policy == "priority":
        return PriorityQueue()
    raise ValueError(f"unknown scheduling policy {policy!r}; valid: fcfs, priority")
