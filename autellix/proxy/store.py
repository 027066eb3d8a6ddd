"""The program table as the call path sees it: one interface for starts, finishes and programs.

Theory of operation
-------------------
The call path asks three things of the table per call: where the program is pinned (to route), the
call's priority context (to forward), and to record how the call went (so the next call sees it). It
should not have to know which table answers, whether Redis is down, or whether a start's reply has to
be waited for. This store answers those questions; underneath it are the tables of :mod:`.failover`
(memory, Redis, memory while Redis is down) and this replica's :class:`~.programs.mirror.ProgramMirror`.

1. :meth:`ProgramStore.prepare` once per call, before anything else: after a Redis outage the mirror is
   cleared (mirror rule 5: Redis may have kept or lost any of what was sent meanwhile), and a program
   this replica just named for a call without a program id is known to be new (mirror rule 1).
2. :meth:`ProgramStore.start` returns the call's :class:`~.programs.CallStartResult`. On a healthy
   standalone Redis (``--starts-ahead``, the default), when the mirror is exact for the program and the
   start decides no pin (mirror rule 3), the start is written on the ordered link and the result is the
   mirrored one at once ("ahead"); Redis's reply is checked when it comes (mirror rule 4) and its
   outcome (``confirmed``, ``differed``, ``failed``) reported to ``on_start_ahead``. Otherwise the
   table's answer is awaited: with memory only the pin is mirrored; with Redis the reply makes the
   mirror exact (mirror rule 1), and a reply from the local table while degraded makes it unknown.
3. A start awaited on Redis is given back when its caller is cancelled (the client left): on the
   ordered link a failed finish is written behind it at once (Redis executes it after the start); on
   a Redis Cluster the start is shielded and the failed finish follows it in the background.
4. :meth:`ProgramStore.finish` records a finish before it returns (failover.py rule 5: memory has
   applied it; a standalone Redis has it written on the ordered link, so this replica's next start of
   the program is executed after it); only an unordered table (Redis Cluster) is awaited, shielded,
   so that a cancellation cannot lose it. :meth:`ProgramStore.finish_soon` is the same without the
   wait. Every finish advances the mirror (mirror rule 2) and is reported to ``on_finish``; a finish
   that ends its program forgets it and reports the ended program to ``on_program_end`` when the
   table answers (rule 8).
5. ``loads`` is this replica's view of the fleet's outstanding calls per engine, for routing: every
   start's reply replaces it, :meth:`count_routed` adds a call at once (calls arriving together spread
   out before their replies return), and the app refreshes it every second.
6. :meth:`ProgramStore.create` (``POST /v1/programs``) makes the mirror exact for a program it created
   on a reachable table, so the program's first call can go ahead; :meth:`ProgramStore.end` forgets it.
7. A reply an engine stores (a Responses API response) is remembered with its program and engine
   (failover.py rule 8), so the call that continues it joins that program on that engine.
8. Programs end three ways, each reported to ``on_program_end`` with the program as it ended: with
   the finish of their only call (``one_call``: a call without a program id), by ``DELETE``
   (``deleted``), and by expiry after the idle TTL (``expired``: most agents never say they are done).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from .background import BackgroundTasks, settle
from .failover import Ended, FailoverTable, LocalProgramTable
from .programs import CallFinish, CallStart, CallStartResult, ProgramState, StoredReply
from .programs.mirror import ProgramMirror, StartTicket
from .programs.redis_table import RedisProgramTable

log = logging.getLogger("autellix.proxy.table")


def _ignore(*_args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class StoreEvents:
    """What the store tells its owner (the app turns these into metrics)."""

    on_start_ahead: Callable[[str], None] = _ignore  # rule 2: confirmed, differed, failed
    on_finish: Callable[[CallFinish], None] = _ignore  # rule 4: every finish recorded
    on_program_end: Callable[[ProgramState, str], None] = _ignore  # rule 8: a program as it ended, and how


class ProgramStore:
    """Rules 1-6 over a :class:`~.failover.FailoverTable`."""

    def __init__(
        self,
        tables: FailoverTable,
        *,
        starts_ahead: bool = True,
        events: StoreEvents | None = None,
        background: BackgroundTasks | None = None,
        mirror: ProgramMirror | None = None,
    ) -> None:
        self.tables = tables
        self.starts_ahead = starts_ahead
        self.events = events or StoreEvents()
        self.background = background if background is not None else BackgroundTasks()
        self.mirror = mirror if mirror is not None else ProgramMirror()
        self.loads: dict[str, int] = {}
        self._outages = tables.outages  # the outages the mirror has been cleared for (rule 1)

    # --- what the tables are ---------------------------------------------------------------------

    @property
    def mode(self) -> Literal["memory", "redis", "degraded"]:
        return self.tables.mode

    @property
    def reachable(self) -> bool:
        return self.tables.reachable

    @property
    def degraded(self) -> bool:
        return self.tables.degraded

    @property
    def redis(self) -> RedisProgramTable | None:
        return self.tables.redis

    @property
    def local(self) -> LocalProgramTable:
        return self.tables.local

    # --- the call path ---------------------------------------------------------------------------

    def prepare(self, program_id: str, named_here: bool) -> None:
        """Rule 1 (``named_here``: the proxy named the program for this call, so it is new)."""
        if self._outages != self.tables.outages:
            self._outages = self.tables.outages
            self.mirror.clear()
        if named_here:
            self.mirror.created(program_id, private=True)

    def pin(self, program_id: str) -> str | None:
        """The program's pin as this replica knows it (routing follows it; the table has the last word)."""
        return self.mirror.pin(program_id)

    def refresh_loads(self, loads: Mapping[str, int]) -> None:
        """Rule 5."""
        self.loads = dict(loads)

    def count_routed(self, engine_id: str) -> None:
        """Rule 5: a call routed to ``engine_id`` counts in this replica's view at once."""
        self.loads[engine_id] = self.loads.get(engine_id, 0) + 1

    async def start(self, start: CallStart, now: float, *, one_shot: bool) -> CallStartResult:
        """Rules 2-3."""
        if self.starts_ahead and self.tables.can_start_ahead:
            result = self._start_ahead(start, now)
            if result is not None:
                return result
        return await self._start_and_wait(start, now, one_shot)

    def finish_soon(
        self, finish: CallFinish, now: float, *, atlas_at_arrival: float, end_program: bool
    ) -> asyncio.Future[Ended | None]:
        """Rule 4 without the wait: the future of the ended program's (service, wait)."""
        self.events.on_finish(finish)
        self.mirror.finished(finish, atlas_at_arrival)
        done = self.tables.finish_soon(finish, now, end_program=end_program)
        if end_program:
            self.mirror.forget(finish.program_id)
            done.add_done_callback(self._observe_end)
        return done

    async def finish(
        self, finish: CallFinish, now: float, *, atlas_at_arrival: float, end_program: bool
    ) -> None:
        """Rule 4: recorded (memory) or sent ahead of this replica's later table operations (Redis)
        before this returns; only an unordered table (Redis Cluster) is waited for."""
        done = self.finish_soon(finish, now, atlas_at_arrival=atlas_at_arrival, end_program=end_program)
        if self.tables.ordered:
            return
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:  # the client left while Redis recorded the finish
            self.background.spawn(settle(done))
            raise

    def _observe_end(self, done: asyncio.Future[Ended | None]) -> None:
        ended = None if done.cancelled() or done.exception() is not None else done.result()
        if ended is not None:
            self.events.on_program_end(ended, "one_call")

    def _start_ahead(self, start: CallStart, now: float) -> CallStartResult | None:
        """Rule 2: the start written without waiting and the mirrored context, when the mirror is
        exact for the program (mirror rule 3); None: wait for the table instead."""
        mirror = self.mirror
        if not mirror.can_go_ahead(start.program_id, start.engine_id, start.pin):
            return None
        had_pin = mirror.pin(start.program_id) is not None
        ticket = mirror.start(start.program_id, start.engine_id, start.pin, ahead=True)

        def replied(result: CallStartResult | None) -> None:
            self._ahead_replied(start.program_id, result, ticket)

        if not self.tables.start_ahead(start, now, replied):
            mirror.start_failed(start.program_id)  # counted a start that was never written
            return None
        expected = ticket.expected
        assert expected is not None  # can_go_ahead: the entry is exact
        return CallStartResult(
            program_id=start.program_id,
            call_id=start.call_id,
            engine_id=expected.engine_id,
            pin_created=start.pin and not had_pin,
            pinned_engine=expected.pinned_engine,
            service_plas=expected.service_plas,
            service_atlas=expected.service_atlas,
            program_wait=expected.program_wait,
            prior_calls=expected.prior_calls,
            completed_calls=expected.completed_calls,
            duplicate=False,
            engine_loads=self.loads,
        )

    def _ahead_replied(self, program_id: str, result: CallStartResult | None, ticket: StartTicket) -> None:
        """Rule 2: Redis's answer to a start that went ahead; a difference is counted (mirror rule 4)."""
        if result is None:
            self.events.on_start_ahead("failed")
            self.mirror.start_failed(program_id)
            return
        self.refresh_loads(result.engine_loads)
        if self.mirror.replied(ticket, result):
            self.events.on_start_ahead("differed")
            expected = ticket.expected  # debug: without session affinity this is once per program
            log.debug(
                "program %s: call %s went ahead with a context Redis did not confirm (another replica "
                "serves the program too); its later calls wait for the table (sent: service %s, calls "
                "%s started / %s done; Redis: %s, %d / %d)", result.program_id, result.call_id,
                expected and expected.service_plas, expected and expected.prior_calls,
                expected and expected.completed_calls, result.service_plas, result.prior_calls,
                result.completed_calls,
            )  # fmt: skip
        else:
            self.events.on_start_ahead("confirmed")

    async def _start_and_wait(self, start: CallStart, now: float, one_shot: bool) -> CallStartResult:
        """Rules 2-3: the start recorded by the table before the call goes on."""
        tables = self.tables
        if tables.redis is None:  # the memory table: nothing ever goes ahead, only pins matter
            result = await tables.start_call(start, now)
            self.refresh_loads(result.engine_loads)
            self.mirror.pinned(start.program_id, result.pinned_engine)
            return result
        ticket = self.mirror.start(start.program_id, start.engine_id, start.pin, ahead=False)
        given_back = CallFinish(start.program_id, start.call_id, exec_time=0.0, queue_wait=0.0, ok=False)
        try:
            if tables.ordered:
                try:
                    result = await tables.start_call(start, now)
                except asyncio.CancelledError:  # a failed finish, ordered behind the start (rule 3)
                    self.finish_soon(given_back, time.time(), atlas_at_arrival=0.0, end_program=one_shot)
                    raise
            else:
                starting = asyncio.ensure_future(tables.start_call(start, now))
                try:
                    result = await asyncio.shield(starting)
                except asyncio.CancelledError:  # rule 3 on an unordered table
                    self.background.spawn(self._give_back(starting, given_back, one_shot))
                    raise
        except BaseException:
            self.mirror.start_failed(start.program_id)
            raise
        self.refresh_loads(result.engine_loads)
        if tables.mode == "degraded":  # the local table answered: Redis may hold something else
            self.mirror.start_failed(start.program_id)
        else:
            self.mirror.replied(ticket, result)
        return result

    async def _give_back(
        self, starting: asyncio.Future[CallStartResult], finish: CallFinish, one_shot: bool
    ) -> None:
        try:
            await starting
        except Exception:
            return
        try:
            await self.finish(finish, time.time(), atlas_at_arrival=0.0, end_program=one_shot)
        except Exception:
            return

    async def remember_reply(self, reply_id: str, reply: StoredReply, now: float) -> None:
        """Rule 7: a reply the engine stored; returns at once unless the table is a Redis Cluster."""
        await self.tables.remember_reply(reply_id, reply, now)

    async def find_reply(self, reply_id: str, now: float) -> StoredReply | None:
        """Rule 7."""
        return await self.tables.find_reply(reply_id, now)

    # --- programs --------------------------------------------------------------------------------

    async def create(self, program_id: str, now: float) -> bool:
        """Rule 6: ``POST /v1/programs``; False if the program exists."""
        created = await self.tables.create(program_id, now)
        if created and self.tables.mode != "degraded":
            self.mirror.created(program_id)  # its first call can go ahead (mirror rule 1)
        return created

    async def end(self, program_id: str, now: float, *, deleted: bool = False) -> ProgramState | None:
        """Rule 6: ``DELETE /v1/programs/{id}`` (``deleted``: reported, rule 8), or a one-call program
        whose call was never served (not reported: it never ran)."""
        self.mirror.forget(program_id)
        state = await self.tables.end(program_id, now)
        if state is not None and deleted:
            self.events.on_program_end(state, "deleted")
        return state

    async def get(self, program_id: str) -> ProgramState | None:
        return await self.tables.get(program_id)

    async def gc(self, now: float) -> list[str]:
        """Expire idle programs (rule 8 reports each)."""
        expired = await self.tables.expire(now)
        for state in expired:
            self.mirror.forget(state.program_id)
            self.events.on_program_end(state, "expired")
        return sorted(state.program_id for state in expired)

    async def engine_loads(self) -> dict[str, int]:
        return await self.tables.engine_loads()

    async def program_count(self) -> int:
        return await self.tables.program_count()

    async def connect(self) -> None:
        await self.tables.connect()

    async def maintain(self) -> None:
        await self.tables.maintain()

    async def aclose(self) -> None:
        await self.tables.aclose()
