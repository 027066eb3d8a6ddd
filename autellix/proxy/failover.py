"""The program table behind the store: Redis when configured, in-process memory otherwise, and memory as
the fallback while Redis is down. (:mod:`.store` wraps this with what the call path needs on top: the
mirror that lets calls go ahead of their starts, and this replica's view of the fleet's loads.)

Theory of operation
-------------------
1. Without a Redis URL every operation goes to a :class:`LocalProgramTable` (the in-memory table of
   :mod:`.programs.memory`); each replica then has its own programs, which is right for one replica.
2. With Redis, every operation goes to the :class:`~.programs.redis_table.RedisProgramTable`. The first
   failure of an operation (connection refused, timeout, any Redis error) switches the store to
   *degraded*: a warning is logged and from then on calls start in the local table, so the proxy keeps
   serving with program-local state. Nothing is retried against Redis on the hot path; instead
   :meth:`FailoverTable.maintain` (run every second or so) pings Redis and, when it answers, switches
   back (a second log line says so).
3. What is kept and what is lost across an outage:
   - finishes of calls that had started on Redis and ended during the outage are queued (up to
     :data:`MAX_PENDING_FINISHES`) and replayed when Redis returns; finishes are idempotent (rule 4), so
     a replay never double-counts, and one whose program expired meanwhile is simply dropped;
   - calls that started during the outage live in the local table until they finish; their programs'
     service, waits and pins are NOT merged into Redis (the program restarts from what Redis had, so the
     priority of a program that ran during the outage is too high for a while, never too low);
   - engine loads: while degraded, a replica sees only its own calls (least-used is local);
   - if the outage outlasts the replica's lease, other replicas release its Redis calls (their counts
     and in-flight entries); their late finishes are then no-ops.
4. Each call remembers where it started (``(program, call)`` in ``_local_calls``), so its finish goes
   to the same table whatever happened in between.
5. :meth:`FailoverTable.finish_soon` records a finish without suspending the caller whenever it can:
   in memory (and for a call of the local table) it is applied at once; on a standalone Redis it is
   written on the table's ordered link at once (``ordered`` is True: every later start or finish of
   this replica is executed after it) and its outcome is handled by a callback (an outage queues it
   as in rule 3). The returned future gives the ended program's ``(service, wait)`` (None when the
   program goes on); the caller need not await it, and cancelling its wait changes nothing. Only a
   Redis Cluster table (not ordered) runs the finish as a task the caller should await.
6. :meth:`FailoverTable.start_ahead` does the same for a start whose call goes ahead of its reply
   (``programs/mirror.py``): written on the ordered link at once, so everything this replica writes
   later on the program is executed after it; its result reaches a callback (an error reply, even
   ``NOSCRIPT``, counts as an outage there: nobody waits to retry it). Only on a healthy standalone
   Redis; anywhere else the caller awaits :meth:`FailoverTable.start_call`.
7. :meth:`FailoverTable.connect` at start-up: a Redis that cannot be reached then is the first outage
   (rule 2), and recovery is the same as after any other.
8. Stored replies (a Responses API response that a later call continues): every one is remembered
   in the local table (at most :data:`MAX_LOCAL_REPLIES`, for the program's idle TTL), so this
   replica finds its own without a round trip, and in Redis (redis_table.py rule 7, written on the
   ordered link without waiting, like a finish), so every replica finds them. A lookup asks the local
   table first, then Redis. An outage loses no reply this replica saw; others' it cannot see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from redis.exceptions import RedisError

from .programs import (
    CallFinish,
    CallStart,
    CallStartResult,
    MemoryProgramTable,
    ProgramExpiry,
    ProgramState,
    StoredReply,
)
from .programs.redis_scripts import finish_summary, start_reply
from .programs.redis_table import RedisProgramTable
from .programs.rules import is_expired, new_program

log = logging.getLogger("autellix.proxy.table")

MAX_PENDING_FINISHES = 10_000
MAX_LOCAL_REPLIES = 200_000
T = TypeVar("T")
Ended = ProgramState  # a program as it was when its last finish ended it
TableObserver = Callable[[str, float, bool], None]
_OUTAGE = (RedisError, OSError, asyncio.TimeoutError)


class LocalProgramTable(MemoryProgramTable):
    """The in-memory table plus what the proxy needs beyond the protocol: create, finish-and-end, and
    the stored replies this replica saw (rule 8)."""

    def __init__(self, expiry: ProgramExpiry | None = None, reply_capacity: int = MAX_LOCAL_REPLIES) -> None:
        super().__init__(expiry)
        self.reply_capacity = reply_capacity
        self._replies: OrderedDict[str, tuple[StoredReply, float]] = OrderedDict()

    def remember_reply(self, reply_id: str, reply: StoredReply, now: float) -> None:
        self._replies[reply_id] = (reply, now)
        self._replies.move_to_end(reply_id)
        if len(self._replies) > self.reply_capacity:
            self._replies.popitem(last=False)

    def find_reply(self, reply_id: str, now: float) -> StoredReply | None:
        found = self._replies.get(reply_id)
        if found is None or now - found[1] > self.expiry.idle_ttl:
            return None
        return found[0]

    def expire(self, now: float) -> list[ProgramState]:
        """``gc``, with the expired programs as they were (and stored replies past the idle TTL)."""
        while self._replies:
            oldest = next(iter(self._replies.values()))
            if now - oldest[1] <= self.expiry.idle_ttl:
                break
            self._replies.popitem(last=False)
        states = {pid: state for pid, state in self._programs.items() if is_expired(state, now, self.expiry)}
        super().gc(now)
        return [states[pid] for pid in sorted(states)]

    def gc(self, now: float) -> list[str]:
        return [state.program_id for state in self.expire(now)]

    def create(self, program_id: str, now: float) -> bool:
        if program_id in self:
            return False
        self._programs[program_id] = new_program(program_id, now)
        return True

    def finish_and_maybe_end(self, finish: CallFinish, now: float, end_program: bool) -> ProgramState | None:
        state = self.finish_call(finish, now)
        if state is not None and end_program:
            self.end(finish.program_id, now)
        return state


class FailoverTable:
    """Redis, memory, or memory while Redis is down (see the module doc for the rules)."""

    def __init__(
        self,
        redis: RedisProgramTable | None,
        local: LocalProgramTable,
        observe: TableObserver | None = None,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        self.redis = redis
        self.local = local
        self._observe = observe or (lambda op, seconds, ok: None)
        self._on_degraded = on_degraded or (lambda degraded: None)
        self.degraded = False
        self.outages = 0  # times the store degraded: what Redis kept across an outage is unknown
        self._local_calls: set[tuple[str, str]] = set()
        self._pending: deque[tuple[CallFinish, float, bool]] = deque(maxlen=MAX_PENDING_FINISHES)

    @property
    def mode(self) -> Literal["memory", "redis", "degraded"]:
        if self.redis is None:
            return "memory"
        return "degraded" if self.degraded else "redis"

    @property
    def reachable(self) -> bool:
        return self.redis is None or not self.degraded

    @property
    def ordered(self) -> bool:
        """Rule 5: a finish is recorded (or written, in order) before :meth:`finish_soon` returns."""
        return self.redis is None or self.redis.ordered

    async def _on_redis(self, op: str, action: Callable[[RedisProgramTable], Awaitable[T]]) -> T:
        assert self.redis is not None
        started = time.perf_counter()
        try:
            result = await action(self.redis)
        except _OUTAGE as exc:
            self._failed(op, started, exc)
            raise
        self._observe(op, time.perf_counter() - started, True)
        return result

    def _failed(self, op: str, started: float, exc: BaseException) -> None:
        self._observe(op, time.perf_counter() - started, False)
        self._degrade("Redis unreachable (%s: %s): serving from the local program table until it returns",
                      exc)  # fmt: skip

    def _degrade(self, message: str, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            self.outages += 1
            self._on_degraded(True)
            log.warning(message, type(exc).__name__, exc)

    async def connect(self) -> None:
        """Rule 7: connect to Redis at start-up (memory: nothing to do)."""
        if self.redis is None:
            return
        try:
            await self.redis.connect()
        except Exception as exc:  # anything at all: the proxy serves from memory and probes (rule 2)
            self._degrade("Redis unreachable at start-up (%s: %s): degraded to the local program table", exc)

    def _use_redis(self) -> bool:
        return self.redis is not None and not self.degraded

    async def start_call(self, start: CallStart, now: float) -> CallStartResult:
        if self._use_redis():
            try:
                return await self._on_redis("start_call", lambda t: t.start_call(start, now))
            except _OUTAGE:
                pass
        if self.redis is not None:
            self._local_calls.add((start.program_id, start.call_id))
        return self.local.start_call(start, now)

    @property
    def can_start_ahead(self) -> bool:
        """Rule 6: a healthy standalone Redis, where :meth:`start_ahead` normally succeeds."""
        return self.redis is not None and not self.degraded and self.redis.ordered

    def start_ahead(
        self, start: CallStart, now: float, on_reply: Callable[[CallStartResult | None], None]
    ) -> bool:
        """Rule 6: write ``start`` on the ordered link without waiting; ``on_reply`` gets its result
        later (None: no reply came, an outage, rule 2). False when that cannot be done (memory,
        degraded, cluster, link down): then await :meth:`start_call`. The call's finish goes the way of
        every finish of a call started on Redis (rule 3)."""
        if not self.can_start_ahead:
            return False
        assert self.redis is not None
        started = time.perf_counter()
        try:
            reply = self.redis.send_start(start, now)
        except _OUTAGE:
            return False

        def settle(reply: asyncio.Future[Any]) -> None:
            exc = asyncio.CancelledError() if reply.cancelled() else reply.exception()
            if exc is not None:
                self._failed("start_call", started, exc)
                on_reply(None)
                return
            self._observe("start_call", time.perf_counter() - started, True)
            on_reply(start_reply(start, reply.result()))

        reply.add_done_callback(settle)
        return True

    async def finish_call(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> ProgramState | None:
        key = (finish.program_id, finish.call_id)
        if self.redis is None or key in self._local_calls:
            self._local_calls.discard(key)
            return self.local.finish_and_maybe_end(finish, now, end_program)
        if self.degraded:
            self._pending.append((finish, now, end_program))
            return None
        try:
            return await self._on_redis(
                "finish_call", lambda t: t.finish_call(finish, now, end_program=end_program)
            )
        except _OUTAGE:
            self._pending.append((finish, now, end_program))
            return None

    def finish_soon(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> asyncio.Future[Ended | None]:
        """Rule 5: record (or send) a finish now; the future of the ended program's (service, wait)."""
        loop = asyncio.get_running_loop()
        key = (finish.program_id, finish.call_id)
        if self.redis is None or key in self._local_calls or self.degraded:
            done: asyncio.Future[Ended | None] = loop.create_future()
            if self.redis is None or key in self._local_calls:
                self._local_calls.discard(key)
                state = self.local.finish_and_maybe_end(finish, now, end_program)
                done.set_result(state if state is not None and end_program else None)
            else:
                self._pending.append((finish, now, end_program))
                done.set_result(None)
            return done
        if not self.redis.ordered:
            return asyncio.ensure_future(self._finish_unordered(finish, now, end_program))
        started = time.perf_counter()
        outcome: asyncio.Future[Ended | None] = loop.create_future()
        try:
            reply = self.redis.send_finish(finish, now, end_program=end_program)
        except _OUTAGE as exc:
            self._failed("finish_call", started, exc)
            self._pending.append((finish, now, end_program))
            outcome.set_result(None)
            return outcome

        def settle(reply: asyncio.Future[Any]) -> None:
            exc = asyncio.CancelledError() if reply.cancelled() else reply.exception()
            if exc is not None:
                self._failed("finish_call", started, exc)
                self._pending.append((finish, now, end_program))
                summary = None
            else:
                self._observe("finish_call", time.perf_counter() - started, True)
                summary = finish_summary(finish.program_id, reply.result())
            if not outcome.done():
                outcome.set_result(summary)

        reply.add_done_callback(settle)
        return outcome

    async def _finish_unordered(self, finish: CallFinish, now: float, end_program: bool) -> Ended | None:
        state = await self.finish_call(finish, now, end_program=end_program)
        return state if state is not None and end_program else None

    async def remember_reply(self, reply_id: str, reply: StoredReply, now: float) -> None:
        """Rule 8: returns at once on memory or a standalone Redis; waits on a Redis Cluster."""
        self.local.remember_reply(reply_id, reply, now)
        if not self._use_redis():
            return
        assert self.redis is not None
        if not self.redis.ordered:
            with contextlib.suppress(*_OUTAGE):
                await self._on_redis("remember_reply", lambda t: t.remember_reply(reply_id, reply))
            return
        started = time.perf_counter()
        try:
            sent = self.redis.send_reply(reply_id, reply)
        except _OUTAGE as exc:
            self._failed("remember_reply", started, exc)
            return

        def settle(sent: asyncio.Future[Any]) -> None:
            exc = asyncio.CancelledError() if sent.cancelled() else sent.exception()
            if exc is not None:
                self._failed("remember_reply", started, exc)
            else:
                self._observe("remember_reply", time.perf_counter() - started, True)

        sent.add_done_callback(settle)

    async def find_reply(self, reply_id: str, now: float) -> StoredReply | None:
        """Rule 8: this replica's first, then Redis's."""
        found = self.local.find_reply(reply_id, now)
        if found is not None or not self._use_redis():
            return found
        try:
            return await self._on_redis("find_reply", lambda t: t.find_reply(reply_id))
        except _OUTAGE:
            return None

    async def create(self, program_id: str, now: float) -> bool:
        if self._use_redis():
            try:
                return await self._on_redis("create", lambda t: t.create(program_id, now))
            except _OUTAGE:
                pass
        return self.local.create(program_id, now)

    async def get(self, program_id: str) -> ProgramState | None:
        if self._use_redis():
            try:
                state = await self._on_redis("get", lambda t: t.get(program_id))
                if state is not None:
                    return state
            except _OUTAGE:
                pass
        return self.local.get(program_id)

    async def end(self, program_id: str, now: float) -> ProgramState | None:
        ended = self.local.end(program_id, now)
        if self._use_redis():
            try:
                remote = await self._on_redis("end", lambda t: t.end(program_id, now))
                ended = remote or ended
            except _OUTAGE:
                pass
        return ended

    async def gc(self, now: float) -> list[str]:
        return sorted({state.program_id for state in await self.expire(now)})

    async def expire(self, now: float) -> list[ProgramState]:
        """Expire programs in both tables; the expired programs as they were."""
        expired = self.local.expire(now)
        if self._use_redis():
            with contextlib.suppress(*_OUTAGE):
                expired += await self._on_redis("gc", lambda t: t.expire(now))
        live = {pid for pid, _ in self._local_calls if pid in self.local}
        self._local_calls = {key for key in self._local_calls if key[0] in live}
        return expired

    async def engine_loads(self) -> dict[str, int]:
        loads = self.local.engine_loads()
        if self._use_redis():
            try:
                remote = await self._on_redis("engine_loads", lambda t: t.engine_loads())
            except _OUTAGE:
                return loads
            for engine, count in remote.items():
                loads[engine] = loads.get(engine, 0) + count
        return loads

    async def program_count(self) -> int:
        count = len(self.local)
        if self._use_redis():
            with contextlib.suppress(*_OUTAGE):
                count += await self._on_redis("program_count", lambda t: t.program_count())
        return count

    async def maintain(self) -> None:
        """Renew the lease; while degraded, probe Redis and recover (replaying queued finishes)."""
        if self.redis is None:
            return
        if not self.degraded:
            with contextlib.suppress(*_OUTAGE):
                await self._on_redis("renew_lease", lambda t: t.renew_lease())
            return
        try:
            await self.redis.connect()
        except _OUTAGE:
            return
        self.degraded = False
        self._on_degraded(False)
        replayed = 0
        while self._pending:
            finish, at, end_program = self._pending[0]
            try:
                await self._replay(finish, at, end_program)
            except _OUTAGE:
                return
            self._pending.popleft()
            replayed += 1
        log.warning("Redis is back: program table shared again (%d queued finishes replayed)", replayed)

    async def _replay(self, finish: CallFinish, now: float, end_program: bool) -> None:
        await self._on_redis("finish_call", lambda t: t.finish_call(finish, now, end_program=end_program))

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
