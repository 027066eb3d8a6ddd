"""Drives the pure :class:`SimEngine` in scaled real time for the HTTP server (the IO shell of DESIGN.md §4).

Theory of operation
-------------------
Simulated time ``t`` maps to the event loop's clock as ``wall = wall0 + t * time_scale``.

1. A request is added to the engine at once, stamped with the current simulated time; vLLM likewise
   queues a request the moment it arrives and schedules it at the next step.
2. The step loop runs one engine step at the end of the previous one (``now`` after an idle spell); it returns
   what the step produced and how long it takes; the loop sleeps until the step's end on the wall clock
   and only then hands the step's tokens to the waiting handlers. Tokens therefore appear on step
   boundaries, as from a real engine.
3. When the event loop falls behind (a slow machine, a huge batch), simulated time keeps following the
   step durations rather than the wall clock, so the simulated engine's own timings stay true; the lag is
   exported as ``lag_seconds``.
4. An aborted request is removed from the engine immediately; outputs of a step already under way are
   dropped for it.
5. With nothing to run, the loop sleeps until a request arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from autellix.simulator.engine import RequestOutput, SimEngine, SimRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestHandle:
    """What a handler holds for one submitted request; step outputs arrive on ``outputs``."""

    request_id: str
    arrival: float
    outputs: asyncio.Queue[tuple[RequestOutput, float]] = field(default_factory=asyncio.Queue)
    finished: bool = False


class EngineDriver:
    """Owns one engine and its step loop; handlers submit, await outputs and abort."""

    def __init__(
        self, engine: SimEngine, time_scale: float, clock: Callable[[], float] | None = None
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.engine = engine
        self.time_scale = time_scale
        self._clock = clock or asyncio.get_running_loop().time
        self._wall0 = self._clock()
        self._cursor = 0.0
        self._handles: dict[str, RequestHandle] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lag_seconds = 0.0

    def now(self) -> float:
        """Current simulated time in seconds."""
        return (self._clock() - self._wall0) / self.time_scale

    def submit(self, request: SimRequest) -> RequestHandle:
        """Add a request (its ``arrival_time`` is overwritten with the simulated now)."""
        if request.request_id in self._handles:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        request.arrival_time = self.now()
        self.engine.add_request(request)
        handle = RequestHandle(request.request_id, request.arrival_time)
        self._handles[request.request_id] = handle
        self._wake.set()
        return handle

    def abort(self, request_id: str) -> bool:
        """Forget a request; frees its KV blocks at once. True if it was still unfinished."""
        handle = self._handles.pop(request_id, None)
        if handle is None or handle.finished:
            return False
        return self.engine.abort_request(request_id)

    def release(self, request_id: str) -> None:
        """Drop the handle of a request that finished normally."""
        self._handles.pop(request_id, None)

    @property
    def num_handles(self) -> int:
        return len(self._handles)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine-steps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        busy = False
        while True:
            if not self.engine.has_unfinished_requests():
                busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            # Back-to-back steps start exactly where the previous one ended, so the time spent here
            # handing out tokens does not stretch the simulated GPU's steps; after an idle spell the
            # engine starts at the current time.
            start = self._cursor if busy else max(self._cursor, self.now())
            result = self.engine.step(start)
            if result.duration <= 0 and not result.outputs:
                # Nothing fits (e.g. one prompt larger than free KV): wait for an arrival or an abort.
                busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            end = start + result.duration
            self._cursor = end
            busy = True
            delay = self._wall0 + end * self.time_scale - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self.lag_seconds = max(0.0, -delay / self.time_scale)
            for output in result.outputs:
                handle = self._handles.get(output.request_id)
                if handle is None:
                    continue
                if output.finished:
                    handle.finished = True
                handle.outputs.put_nowait((output, end))
