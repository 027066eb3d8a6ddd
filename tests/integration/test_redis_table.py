"""The Redis program table against a real redis-server: the shared contract, round trips, leases, TTLs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from autellix.launch import free_port
from autellix.proxy.programs import CallFinish, CallStart, ProgramExpiry
from autellix.proxy.programs.redis_table import RedisProgramTable
from tests.contract.program_table_contract import CONTRACT_EXPIRY, ProgramTableContract
from tests.integration.conftest import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def unique_prefix() -> str:
    return "t" + secrets.token_hex(4)


async def table_on(url: str, prefix: str, **kwargs: object) -> RedisProgramTable:
    table = RedisProgramTable(url, expiry=CONTRACT_EXPIRY, key_prefix=prefix, **kwargs)  # type: ignore[arg-type]
    await table.connect()
    return table


class TestRedisProgramTable(ProgramTableContract):
    @pytest.fixture
    async def program_table(self, redis_url: str) -> AsyncIterator[RedisProgramTable]:
        table = await table_on(redis_url, unique_prefix())
        yield table
        await table.aclose()


class TestRedisProgramTableSplitScripts(ProgramTableContract):
    """The cluster layout (program half and fleet half as two scripts) on a standalone server."""

    @pytest.fixture
    async def program_table(self, redis_url: str) -> AsyncIterator[RedisProgramTable]:
        client = aioredis.Redis.from_url(redis_url)
        table = RedisProgramTable(client, expiry=CONTRACT_EXPIRY, key_prefix=unique_prefix(), cluster=True)
        await table.connect()
        yield table
        await table.client.aclose()


def commands_from_monitor(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if prefix in line and '"MONITOR"' not in line]


async def count_round_trips(server: RedisServer, table: RedisProgramTable, action) -> list[str]:
    """The commands a client sent while ``action`` ran, read from MONITOR on a raw connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"MONITOR\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"+OK")
    await action()
    await table.client.execute_command("ECHO", "end-of-action")
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")
        if "end-of-action" in line:
            break
        if "lua]" not in line:  # commands issued inside scripts are tagged [0 lua]
            seen.append(line.strip())
    writer.close()
    return seen


async def test_one_round_trip_per_start_and_one_per_finish(redis_server: RedisServer) -> None:
    table = await table_on(redis_server.url, unique_prefix())

    async def one_call() -> None:
        await table.start_call(CallStart("p", "c1", "e1", input_tokens=10), now=1.0)
        await table.finish_call(CallFinish("p", "c1", exec_time=0.5), now=2.0)

    seen = await count_round_trips(redis_server, table, one_call)
    assert len(seen) == 2, seen
    assert all('"EVALSHA"' in line for line in seen)
    await table.aclose()


async def test_split_scripts_take_two_round_trips_each(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    table = RedisProgramTable(client, key_prefix=unique_prefix(), cluster=True)
    await table.connect()

    async def one_call() -> None:
        await table.start_call(CallStart("p", "c1", "e1"), now=1.0)
        await table.finish_call(CallFinish("p", "c1", exec_time=0.5), now=2.0)

    seen = await count_round_trips(redis_server, table, one_call)
    assert len(seen) == 4, seen
    await table.client.aclose()


def test_every_program_key_and_fleet_key_hash_to_one_slot_each() -> None:
    table = RedisProgramTable("redis://127.0.0.1:1/0", key_prefix="autellix", replica_id="r1")
    fleet_slots = {key_slot(key.encode()) for key in table._own}
    assert len(fleet_slots) == 1
    assert key_slot(table.program_key("p-1").encode()) == key_slot(b"p-1")
    assert key_slot(table.program_key("weird}id{").encode()) == key_slot(
        table.program_key("weird}id{").encode()
    )
    with pytest.raises(ValueError):
        RedisProgramTable("redis://127.0.0.1:1/0", key_prefix="bad{prefix}")


async def test_cluster_mode_on_a_real_one_node_cluster(redis_factory, tmp_path) -> None:
    """Redis Cluster rejects a script whose keys span slots: the split layout must pass there."""
    server: RedisServer = redis_factory(
        "--cluster-enabled", "yes", "--cluster-port", str(free_port()), "--dir", str(tmp_path)
    )
    assert b"+OK" in server.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    for _ in range(100):
        if b"cluster_state:ok" in server.command("CLUSTER", "INFO"):
            break
        await asyncio.sleep(0.05)
    table = RedisProgramTable(server.url.rsplit("/", 1)[0], expiry=CONTRACT_EXPIRY, cluster=True)
    await table.connect()
    first = await table.start_call(CallStart("p", "a", "e1", pin=True, input_tokens=5000), now=0.0)
    second = await table.start_call(CallStart("q", "b", "e2"), now=0.0)
    assert (first.engine_id, first.pin_created, second.engine_loads) == ("e1", True, {"e1": 1, "e2": 1})
    state = await table.finish_call(CallFinish("p", "a", exec_time=2.0), now=1.0)
    assert state is not None and state.service_plas == 2.0
    assert await table.end("q", now=2.0) is not None
    assert await table.engine_loads() == {}
    assert await table.gc(now=1000.0) == ["p"]
    await table.client.aclose()
    # the one-script layout would touch two slots in one script (a multi-node cluster refuses that)
    assert key_slot(table.program_key("p").encode()) != key_slot(table._agg.encode())


async def test_a_dead_replicas_calls_are_released_when_its_lease_expires(redis_url: str) -> None:
    prefix = unique_prefix()
    dead = await table_on(redis_url, prefix, replica_id="dead", lease_ttl=0.2)
    alive = await table_on(redis_url, prefix, replica_id="alive", lease_ttl=30.0)
    await dead.start_call(CallStart("p", "lost", "e1"), now=0.0)
    await alive.start_call(CallStart("p", "kept", "e1"), now=0.0)
    assert await alive.engine_loads() == {"e1": 2}
    assert await alive.gc(now=1.0) == []
    assert await alive.engine_loads() == {"e1": 2}  # the lease still holds
    await asyncio.sleep(0.35)
    assert await alive.gc(now=1.0) == []
    assert await alive.engine_loads() == {"e1": 1}
    state = await alive.get("p")
    assert state is not None and [c.call_id for c in state.in_flight] == ["kept"]
    # the dead replica's late finish (a zombie) changes nothing and cannot drive a count negative
    assert await dead.finish_call(CallFinish("p", "lost", exec_time=9.0), now=2.0) is None
    assert await alive.engine_loads() == {"e1": 1}
    assert (await alive.finish_call(CallFinish("p", "kept", exec_time=1.0), now=2.0)) is not None
    assert await alive.engine_loads() == {}
    await dead.aclose()
    await alive.aclose()


async def test_a_process_that_reuses_a_replica_id_releases_what_the_previous_one_left(redis_url: str) -> None:
    """A proxy killed with calls in flight and restarted under the same id (a Kubernetes container
    restarted in its pod keeps the pod name, deploy/k8s's replica id) renews the same lease: unless it
    releases what the dead process left counted, those calls stay counted until their programs end."""
    prefix = unique_prefix()
    crashed = await table_on(redis_url, prefix, replica_id="pod-0", lease_ttl=30.0)
    other = await table_on(redis_url, prefix, replica_id="pod-1", lease_ttl=30.0)
    await crashed.start_call(CallStart("p", "pod-0-0", "e1"), now=0.0)
    await other.start_call(CallStart("q", "pod-1-0", "e1"), now=0.0)
    assert await other.engine_loads() == {"e1": 2}
    restarted = await table_on(redis_url, prefix, replica_id="pod-0", lease_ttl=30.0)  # within the lease
    assert await other.engine_loads() == {"e1": 1}
    lost, kept = await other.get("p"), await other.get("q")
    assert lost is not None and lost.in_flight == ()
    assert kept is not None and [c.call_id for c in kept.in_flight] == ["pod-1-0"]
    # a reconnect after an outage is the same process: its own calls stay counted
    await restarted.start_call(CallStart("r", "pod-0-0", "e0"), now=1.0)
    await restarted.connect()
    assert await other.engine_loads() == {"e0": 1, "e1": 1}
    for table in (crashed, other, restarted):
        await table.aclose()


async def test_renewing_the_lease_keeps_a_replicas_calls(redis_url: str) -> None:
    prefix = unique_prefix()
    replica = await table_on(redis_url, prefix, replica_id="busy", lease_ttl=0.3)
    other = await table_on(redis_url, prefix, replica_id="other")
    await replica.start_call(CallStart("p", "long", "e1"), now=0.0)
    for _ in range(4):
        await asyncio.sleep(0.12)
        await replica.renew_lease()
        await other.gc(now=0.0)
    assert await other.engine_loads() == {"e1": 1}
    await replica.aclose()
    await other.aclose()


async def test_keys_carry_redis_ttls_so_abandoned_programs_disappear(redis_url: str) -> None:
    prefix = unique_prefix()
    table = await table_on(redis_url, prefix, key_ttl=1.0)
    await table.start_call(CallStart("p", "a", "e1"), now=0.0)
    ttl_ms = await table.client.pttl(table.program_key("p"))
    assert 0 < ttl_ms <= 1000
    for key in (table._agg, table._activity):
        assert 0 < await table.client.pttl(key) <= 1000
    await asyncio.sleep(1.2)
    assert await table.get("p") is None
    await table.aclose()


async def test_gc_expiry_uses_the_stored_last_activity(redis_url: str) -> None:
    table = await table_on(redis_url, unique_prefix())
    table.expiry = ProgramExpiry(idle_ttl=5.0, stuck_ttl=50.0)
    await table.start_call(CallStart("p", "a", "e1"), now=100.0)
    await table.finish_call(CallFinish("p", "a", exec_time=1.0), now=103.0)
    assert await table.gc(now=108.0) == []
    assert await table.gc(now=108.01) == ["p"]
    assert await table.program_count() == 0
    await table.aclose()


async def test_create_then_get_and_finish_with_end(redis_url: str) -> None:
    table = await table_on(redis_url, unique_prefix())
    assert await table.create("p", now=3.0) is True
    assert await table.create("p", now=4.0) is False
    state = await table.get("p")
    assert state is not None and (state.created_at, state.calls_started) == (3.0, 0)
    await table.start_call(CallStart("one", "c", "e1"), now=5.0)
    final = await table.finish_call(CallFinish("one", "c", exec_time=0.25), now=6.0, end_program=True)
    assert final is not None and final.service_plas == 0.25
    assert await table.get("one") is None
    assert await table.engine_loads() == {}
    await table.aclose()


async def test_exact_floats_survive_the_round_trip(redis_url: str) -> None:
    table = await table_on(redis_url, unique_prefix())
    values = [0.1, 0.2, 1e-9, 123456.789012345]
    for i, value in enumerate(values):
        await table.start_call(CallStart("p", f"c{i}", "e1"), now=0.1 * i)
        await table.finish_call(CallFinish("p", f"c{i}", exec_time=value, queue_wait=value), now=0.1 * i)
    state = await table.get("p")
    expected = 0.0
    for value in values:
        expected += value
    assert state is not None and state.service_plas == expected and state.wait == expected
    await table.aclose()
