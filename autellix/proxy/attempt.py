"""One attempt of a call on one engine, and the record of how it went (the table's finish).

An :class:`Attempt` is the bookkeeping the steps of one attempt share (calls.py routes it, exchange.py
and relay.py move its bytes); the :class:`Ledger` turns its outcome into the program table's finish:
the sidecar's completion report when one came (the ``X-Autellix-Report`` header or the SSE comment
line), else the proxy's own measurement (calls.py rule 5). A report that does not decode is logged
and ignored (the measurement counts instead); every finish is counted by where its figures came from.
A report's resident share (the sidecar's working set, when it runs a gate) is kept per engine for the
residency router, for :data:`RESIDENT_FRESH_SECONDS`: an engine that stopped reporting counts as
unreported, not as the share it had then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from autellix.engine_adapters.protocol import CompletionReport, ProtocolError, decode_report

from .background import BackgroundTasks
from .metrics import ProxyMetrics
from .programs import CallFinish
from .store import ProgramStore

log = logging.getLogger("autellix.proxy.forward")

RESIDENT_FRESH_SECONDS = 30.0


@dataclass(slots=True)
class Attempt:
    """One attempt's bookkeeping."""

    program_id: str
    call_id: str
    one_shot: bool  # the call is a program of its own, ended with this finish
    started: float  # the request's arrival (perf_counter)
    atlas_at_arrival: float = 0.0  # the ATLAS path the call inherited (the mirror's finish needs it)
    engine: str = ""  # the engine the attempt went to
    sent: float = 0.0
    upstream_end: float = 0.0
    finished: bool = False
    draining: bool = False  # the upstream reply belongs to a background drain (calls.py rule 7)
    deadline: float | None = None  # the call's deadline, event-loop time (limits.py rule 4)
    timeout: float = 0.0  # the seconds that deadline allowed, for the error message

    def left(self, now: float) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - now


class Ledger:
    """Finishes attempts in the store (store.py rule 4) with the report or the measurement."""

    def __init__(self, store: ProgramStore, metrics: ProxyMetrics, background: BackgroundTasks) -> None:
        self.store = store
        self.metrics = metrics
        self.background = background
        self._resident: dict[str, tuple[float, float]] = {}  # engine -> (share, monotonic time)

    def resident(self, engine_id: str, now: float | None = None) -> float | None:
        """The engine's last reported resident share while it is fresh, else None."""
        seen = self._resident.get(engine_id)
        if seen is None:
            return None
        share, at = seen
        current = time.monotonic() if now is None else now
        return share if current - at <= RESIDENT_FRESH_SECONDS else None

    def report(self, raw: str | bytes | None) -> CompletionReport | None:
        """The sidecar's report, or None (measured: no report came; invalid: it did not decode)."""
        if raw is None:
            self.metrics.child(self.metrics.reports, "measured").inc()
            return None
        try:
            report = decode_report(raw)
        except ProtocolError as exc:
            log.warning("ignoring a malformed completion report: %s", exc)
            self.metrics.child(self.metrics.reports, "invalid").inc()
            return None
        self.metrics.child(self.metrics.reports, "sidecar").inc()
        return report

    async def finish(
        self,
        attempt: Attempt,
        report: CompletionReport | None,
        wait: float,
        exec_time: float,
        *,
        ok: bool,
        end: bool,
    ) -> None:
        """The attempt's finish, recorded (or sent, in order) before this returns (store.py rule 4)."""
        attempt.finished = True
        if report is not None:
            if attempt.engine and report.resident is not None:
                self._resident[attempt.engine] = (report.resident, time.monotonic())
            if attempt.engine:  # the fleet's prefix-cache hit rate, as the sidecars report it
                self.metrics.child(self.metrics.prompt_tokens, attempt.engine).inc(
                    max(0, report.prompt_tokens)
                )
                self.metrics.child(self.metrics.cached_tokens, attempt.engine).inc(
                    max(0, report.cached_tokens)
                )
            finish = CallFinish(
                attempt.program_id,
                attempt.call_id,
                exec_time=report.exec_time,
                queue_wait=report.queue_wait,
                prompt_tokens=report.prompt_tokens,
                cached_tokens=report.cached_tokens,
                output_tokens=report.output_tokens,
                ok=report.ok and ok,
            )
        else:
            finish = CallFinish(
                attempt.program_id, attempt.call_id, exec_time=exec_time, queue_wait=wait, ok=ok
            )
        await self.store.finish(
            finish, time.time(), atlas_at_arrival=attempt.atlas_at_arrival, end_program=end
        )

    def given_up(self, attempt: Attempt) -> None:
        """The attempt ended without an answer (the client left, or something unforeseen): finished as
        failed with the time measured so far, in a task the handler's cancellation cannot interrupt."""
        if attempt.finished:
            return
        elapsed = time.perf_counter() - attempt.sent
        attempt.finished = True
        self.background.spawn(self.finish(attempt, None, 0.0, elapsed, ok=False, end=attempt.one_shot))
