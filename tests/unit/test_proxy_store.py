"""The failover table under the proxy's store: memory mode, and degraded mode when Redis cannot be
reached (failover.py)."""

from __future__ import annotations

from autellix.launch import free_port
from autellix.proxy.failover import FailoverTable, LocalProgramTable
from autellix.proxy.programs import CallFinish, CallStart, ProgramExpiry
from autellix.proxy.programs.redis_table import RedisProgramTable

EXPIRY = ProgramExpiry(idle_ttl=60.0, stuck_ttl=600.0)


def unreachable_store(seen: list[tuple[str, bool]]) -> FailoverTable:
    redis = RedisProgramTable(f"redis://127.0.0.1:{free_port()}/0", expiry=EXPIRY, socket_timeout=0.2)
    return FailoverTable(redis, LocalProgramTable(EXPIRY), lambda op, seconds, ok: seen.append((op, ok)))


async def test_memory_mode_serves_everything_locally() -> None:
    store = FailoverTable(None, LocalProgramTable(EXPIRY))
    assert (store.mode, store.reachable) == ("memory", True)
    assert await store.create("p", now=0.0) is True
    result = await store.start_call(CallStart("p", "c", "e1", pin=True), now=1.0)
    assert (result.engine_id, result.pin_created, result.engine_loads) == ("e1", True, {"e1": 1})
    state = await store.finish_call(CallFinish("p", "c", exec_time=2.0), now=2.0)
    assert state is not None and state.service_plas == 2.0
    await store.start_call(CallStart("one", "c", "e1"), now=3.0)
    await store.finish_call(CallFinish("one", "c", exec_time=1.0), now=4.0, end_program=True)
    assert await store.get("one") is None
    assert await store.program_count() == 1
    assert await store.gc(now=1000.0) == ["p"]


async def test_an_unreachable_redis_degrades_to_the_local_table() -> None:
    seen: list[tuple[str, bool]] = []
    store = unreachable_store(seen)
    result = await store.start_call(CallStart("p", "c", "e1"), now=0.0)
    assert (store.mode, store.reachable, result.engine_id) == ("degraded", False, "e1")
    assert seen == [("start_call", False)]
    state = await store.finish_call(CallFinish("p", "c", exec_time=1.0), now=1.0)
    assert state is not None and state.service_plas == 1.0  # the local call finished locally
    assert await store.get("p") is not None
    await store.maintain()  # the probe fails: still degraded, no exception
    assert store.degraded
    await store.aclose()


async def test_finishes_of_redis_calls_during_an_outage_are_queued() -> None:
    store = unreachable_store([])
    store.degraded = True  # as if the call had started on Redis before the outage
    assert await store.finish_call(CallFinish("p", "remote", exec_time=1.0), now=1.0) is None
    assert len(store._pending) == 1
    await store.aclose()
