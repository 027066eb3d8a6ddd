"""The failover table's hot path on a real redis-server (failover.py rule 5, redis_link.py rules 1-4):
finishes sent in order without waiting, a start given back by a finish queued behind it, brief replies,
outages."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Callable

import pytest

from autellix.proxy.failover import FailoverTable, LocalProgramTable
from autellix.proxy.programs import CallFinish, CallStart, ProgramExpiry
from autellix.proxy.programs.redis_table import RedisProgramTable
from tests.integration.conftest import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

EXPIRY = ProgramExpiry(idle_ttl=60.0, stuck_ttl=600.0)


async def store_on(url: str, seen: list[tuple[str, bool]] | None = None) -> FailoverTable:
    table = RedisProgramTable(url, expiry=EXPIRY, key_prefix="s" + secrets.token_hex(4), socket_timeout=0.5)
    await table.connect()
    observe = (lambda op, seconds, ok: seen.append((op, ok))) if seen is not None else None
    return FailoverTable(table, LocalProgramTable(EXPIRY), observe)


async def test_a_chain_sees_its_previous_finish_without_waiting_for_it(redis_url: str) -> None:
    store = await store_on(redis_url)
    assert store.ordered
    finished = None
    for n in range(20):  # each start is sent right behind the previous finish, never awaited
        result = await store.start_call(CallStart("p", f"c{n}", "e1"), now=float(n))
        assert (result.service_plas, result.prior_calls) == (float(n), n)
        finished = store.finish_soon(CallFinish("p", f"c{n}", exec_time=1.0), now=n + 0.5)
    # reads go through another connection, which the ordered link does not order: wait for the last finish
    assert finished is not None
    await finished
    state = await store.get("p")
    assert state is not None
    assert (state.service_plas, state.calls_completed, state.in_flight) == (20.0, 20, ())
    assert await store.engine_loads() == {}
    await store.aclose()


async def test_the_brief_finish_gives_the_ended_programs_service_and_wait(redis_url: str) -> None:
    store = await store_on(redis_url)
    await store.start_call(CallStart("p", "a", "e1"), now=0.0)
    await store.start_call(CallStart("p", "b", "e1"), now=0.0)
    assert await store.finish_soon(CallFinish("p", "a", exec_time=2.5, queue_wait=0.25), now=1.0) is None
    last = CallFinish("p", "b", exec_time=1.5, queue_wait=0.5)
    ended = await store.finish_soon(last, now=2.0, end_program=True)
    assert ended is not None and (ended.service_plas, ended.wait, ended.calls_completed) == (4.0, 0.75, 2)
    assert await store.get("p") is None and await store.engine_loads() == {}
    assert await store.finish_soon(CallFinish("p", "b", exec_time=1.0), now=3.0) is None  # not in flight
    await store.aclose()


async def test_a_cancelled_start_is_given_back_by_a_finish_sent_behind_it(redis_url: str) -> None:
    store = await store_on(redis_url)
    starting = asyncio.create_task(store.start_call(CallStart("p", "c", "e1", pin=True), now=0.0))
    await asyncio.sleep(0)  # the start is written; the client leaves before its reply
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert await store.finish_soon(CallFinish("p", "c", exec_time=0.0, ok=False), now=0.5) is None
    state = await store.get("p")
    assert state is not None and (state.calls_started, state.calls_failed, state.in_flight) == (1, 1, ())
    assert await store.engine_loads() == {}
    await store.aclose()


async def test_a_finish_sent_into_an_outage_is_queued_and_replayed(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    seen: list[tuple[str, bool]] = []
    store = await store_on(server.url, seen)
    await store.start_call(CallStart("p", "c", "e1"), now=0.0)
    server.kill()
    assert await asyncio.wait_for(store.finish_soon(CallFinish("p", "c", exec_time=1.0), now=1.0), 5) is None
    assert store.degraded and len(store._pending) == 1 and ("finish_call", False) in seen
    await store.aclose()


async def test_a_silent_redis_times_the_link_out(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    store = await store_on(server.url)  # socket_timeout 0.5 s
    await store.start_call(CallStart("p", "c", "e1"), now=0.0)
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # alive, connected, answering nothing
    try:
        finishing = store.finish_soon(CallFinish("p", "c", exec_time=1.0), now=1.0)
        assert await asyncio.wait_for(finishing, 5) is None
        assert store.degraded and len(store._pending) == 1
    finally:
        server.process.send_signal(signal.SIGCONT)
    await store.maintain()  # Redis answers again: the link reopens and the queued finish is replayed
    assert not store.degraded and not store._pending
    state = await store.get("p")
    assert state is not None and (state.service_plas, state.in_flight) == (1.0, ())
    await store.aclose()
