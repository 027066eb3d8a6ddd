"""The program table in Redis: one atomic Lua script per call start and one per finish (paper §4).

Theory of operation
-------------------
Same semantics as :class:`~.memory.MemoryProgramTable` (the rules of :mod:`.rules`, checked by the
shared contract suite); what Redis adds is sharing between proxy replicas and surviving them.

1. Keys. A program is ONE hash, ``<prefix>:prog:{<program id>}``: its counters, its pin and one field
   per in-flight call. The fleet keys share the hash tag ``{<prefix>}``: ``loads`` (outstanding calls
   per engine, the whole fleet), per replica ``rloads:<replica>`` (that replica's share), ``calls:<replica>``
   (its in-flight calls), ``lease:<replica>`` (a key with a TTL), plus ``replicas`` (the set of replica
   ids) and ``activity`` (program id → last activity, the index ``gc`` scans).
2. Round trips. On a standalone Redis (or Sentinel) each operation is one script that updates the
   program and the fleet keys together: one round trip per start and one per finish. (The start and
   finish scripts name the fleet keys inside Lua from one packed argument, since packing fewer
   arguments is most of what a call costs the proxy here; only a standalone server allows that.)
   On a Redis Cluster a script may only touch keys of one slot, and a program's slot differs from the
   fleet's, so with ``cluster=True`` each operation runs as two scripts, the program half then the fleet
   half (two round trips per start and per finish). The program half alone is atomic, and it is the
   half that matters for agreement between replicas (the pin, the service at arrival); the counts may
   lag by one round trip.
3. Leases. Every call is counted under the replica that started it. A replica holds a lease (a key with
   a TTL of ``lease_ttl`` seconds of Redis time) renewed by every start and by :meth:`renew_lease`, which
   the proxy calls every few seconds. :meth:`gc` on any replica finds replicas whose lease expired,
   subtracts their counts from the fleet total and drops their calls from their programs, so a crashed
   replica never leaves calls counted for longer than its lease plus one gc period. Lease time is the
   Redis server's clock, independent of the ``now`` the callers pass (their logical clock). A process
   that starts under a replica id a previous process used (a container restarted in its pod keeps the
   pod name, which deploy/k8s makes the replica id) would renew that process's lease and so keep its
   calls counted until their programs end: its first :meth:`connect` therefore releases whatever its
   id holds (as gc releases a dead replica's), before it takes the lease. Later connects (recovery
   after an outage) are the same process and release nothing. Two live processes must not share an id.
4. Expiry. ``gc(now)`` reads candidates from the activity index and lets a script decide each one from
   the program's stored last activity with the rule of :func:`~.rules.is_expired`. Every key also gets a
   Redis TTL (``key_ttl``, default twice the stuck TTL) renewed on each write, so the data of a fleet that
   disappears entirely is removed by Redis itself.
5. Encoding. What crosses to the scripts and back (argument lists, exact numbers, sanitised
   measurements, reply layouts) is :mod:`.redis_scripts`; this module holds the connections and keys.
6. The hot path. On a standalone Redis, starts and finishes travel on one ordered, pipelined link
   (:mod:`.redis_link`): each is written before its caller first suspends, commands written in one
   loop turn leave in one write, and Redis executes them in the order this replica wrote them
   (``ordered`` is then True; the store relies on it). :meth:`send_finish` writes a
   finish without waiting and its reply is brief (whether the program ended, and then its service and
   wait), so the common finish parses no program hash; :meth:`send_start` writes a start without
   waiting, for a call that goes ahead of its reply (``mirror.py``). Everything else (gc, leases,
   reads) goes through redis-py, as does everything in cluster mode.
7. Stored replies. A reply an engine stores (a Responses API response, continued later with
   ``previous_response_id``) is one key, ``<prefix>:reply:{<reply id>}`` holding ``[program, engine]``
   with the program's idle TTL: every replica can then send the chained call to the right program and
   engine. Written on the link right after the call's start (so Redis has the start first), read with
   redis-py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from .model import CallFinish, CallStart, CallStartResult, ProgramExpiry, ProgramState, StoredReply
from .redis_link import RedisLink
from .redis_scripts import (
    CREATE,
    DROP,
    END,
    EXPIRE,
    FINISH,
    FUNCTIONS,
    GC,
    LEASE,
    RELEASE,
    START,
    as_text,
    finish_args,
    hash_fields,
    in_flight_releases,
    num,
    pack,
    split_member,
    start_args,
    start_kind,
    start_result,
    state_from_hash,
)

log = logging.getLogger("autellix.proxy.table")


class RedisProgramTable:
    """:class:`~.interface.AsyncProgramTable` in Redis, shared by every proxy replica (see module doc)."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster | str,
        *,
        expiry: ProgramExpiry | None = None,
        key_prefix: str = "autellix",
        replica_id: str | None = None,
        cluster: bool = False,
        lease_ttl: float = 15.0,
        key_ttl: float | None = None,
        socket_timeout: float | None = 1.0,
    ) -> None:
        if not key_prefix or any(c in key_prefix for c in "{}"):
            raise ValueError(f"key_prefix must be non-empty and free of braces, got {key_prefix!r}")
        if not (math.isfinite(lease_ttl) and lease_ttl > 0):
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.expiry = expiry if expiry is not None else ProgramExpiry()
        self.cluster = cluster
        self.replica_id = replica_id or secrets.token_hex(6)
        self._claimed = False  # rule 3: the first connect releases what a previous process left
        self.lease_ms = str(max(1, int(lease_ttl * 1000)))
        ttl = key_ttl if key_ttl is not None else 2 * self.expiry.stuck_ttl
        self.key_ttl_ms = str(max(1000, int(ttl * 1000)))
        self._owns_client = isinstance(client, str)
        url = client if isinstance(client, str) else None
        if isinstance(client, str):
            if cluster:
                client = RedisCluster.from_url(client, socket_timeout=socket_timeout)
            else:
                client = aioredis.Redis.from_url(
                    client, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
                )
        self.client: Any = client
        self.prefix = key_prefix
        fleet = "{" + key_prefix + "}"
        self._fleet = fleet
        self._agg = f"{fleet}:loads"
        self._activity = f"{fleet}:activity"
        self._replicas = f"{fleet}:replicas"
        self._own = (
            self._agg,
            f"{fleet}:rloads:{self.replica_id}",
            f"{fleet}:calls:{self.replica_id}",
            f"{fleet}:lease:{self.replica_id}",
            self._replicas,
            self._activity,
        )
        mode = 1 if cluster else 0
        self._start = self._script(START[mode])
        self._start_fleet = self._script(START[2])
        self._finish = self._script(FINISH[mode])
        self._release = self._script(RELEASE)
        self._end = self._script(END[mode])
        self._expire = self._script(EXPIRE[mode])
        self._create = self._script(CREATE[mode])
        self._create_fleet = self._script(CREATE[2])
        self._gc = self._script(GC)
        self._drop = self._script(DROP)
        self._lease = self._script(LEASE)
        self._link: RedisLink | None = None
        if not cluster:
            self._link = (
                RedisLink.from_url(url, socket_timeout) if url is not None else RedisLink.like(self.client)
            )

    def _script(self, body: str | None) -> AsyncScript:
        script: AsyncScript = self.client.register_script(FUNCTIONS + "\n" + (body or "return nil"))
        return script

    @property
    def ordered(self) -> bool:
        """Rule 6: starts and finishes are executed in the order this replica sends them."""
        return self._link is not None

    def _send(self, script: AsyncScript, key: str, packed: str, flush: bool = False) -> asyncio.Future[Any]:
        assert self._link is not None
        return self._link.send("EVALSHA", script.sha, 1, key, packed, flush=flush)

    async def _eval(self, script: AsyncScript, key: str, packed: str) -> Any:
        """One script on the link (opened if need be; reloaded once if Redis lost it)."""
        assert self._link is not None
        if not self._link.connected:
            await self._link.open()
        try:
            return await self._send(script, key, packed)
        except NoScriptError:
            script.sha = await self._link.call("SCRIPT", "LOAD", script.script)
            return await self._send(script, key, packed)

    def program_key(self, program_id: str) -> str:
        return f"{self.prefix}:prog:{{{program_id}}}"

    def reply_key(self, reply_id: str) -> str:
        return f"{self.prefix}:reply:{{{reply_id}}}"

    # --- stored replies (rule 7) ----------------------------------------------------------------

    def _reply_ttl_ms(self) -> str:
        return str(max(1000, int(self.expiry.idle_ttl * 1000)))

    def send_reply(self, reply_id: str, reply: StoredReply) -> asyncio.Future[Any]:
        """Rule 7 on the link (standalone only), written now; raises ConnectionError when it is down."""
        assert self._link is not None
        value = pack([reply.program_id, reply.engine_id])
        return self._link.send("SET", self.reply_key(reply_id), value, "PX", self._reply_ttl_ms(), flush=True)

    async def remember_reply(self, reply_id: str, reply: StoredReply) -> None:
        value = pack([reply.program_id, reply.engine_id])
        await self.client.set(self.reply_key(reply_id), value, px=int(self._reply_ttl_ms()))

    async def find_reply(self, reply_id: str) -> StoredReply | None:
        raw = await self.client.get(self.reply_key(reply_id))
        if raw is None:
            return None
        program_id, engine_id = json.loads(raw)
        return StoredReply(str(program_id), str(engine_id))

    async def connect(self) -> None:
        """Check the connection and load every script, so that each later call is one EVALSHA."""
        await self.client.ping()
        scripts = (self._start, self._start_fleet, self._finish, self._release, self._end, self._expire)
        for script in (*scripts, self._create, self._create_fleet, self._gc, self._drop, self._lease):
            script.sha = await self.client.script_load(script.script)
        if self._link is not None:
            await self._link.open()
        if not self._claimed:  # rule 3: what a previous process under this id left
            await self._release_previous()
            self._claimed = True
        await self.renew_lease()

    async def _release_previous(self) -> None:
        """Rule 3: this id's lease dropped, then gc's release of replicas without one (no program is
        expired here: the cutoff is -inf)."""
        await self.client.delete(self._own[3])
        orphans, _ = await self._gc(
            keys=[self._replicas, self._agg, self._activity], args=[self._fleet, "-inf"]
        )
        for rid, raw in orphans:
            program_id, call_id = split_member(raw)
            await self._drop(keys=[self.program_key(program_id)], args=[call_id, rid])
        if orphans:
            log.warning("replica %s: released %d call(s) a previous process under this id left in flight",
                        self.replica_id, len(orphans))  # fmt: skip

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.close()
        if self._owns_client:
            await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def renew_lease(self) -> None:
        await self._lease(keys=[self._own[3], self._replicas], args=[self.lease_ms, self.replica_id])

    # --- calls ---------------------------------------------------------------------------------

    async def start_call(self, start: CallStart, now: float) -> CallStartResult:
        args = start_args(start, now, self.replica_id, self.key_ttl_ms)
        key = self.program_key(start.program_id)
        if self.cluster:
            r = await self._start(keys=[key], args=[*args, start_kind(start)])
            fleet_args = [r[0], r[1], start.program_id, start.call_id, args[0], self.replica_id]
            loads = await self._start_fleet(keys=list(self._own), args=[*fleet_args, self.lease_ms, args[8]])
            return start_result(start, r, loads)
        packed = pack([*args, start.program_id, self.lease_ms, self._fleet, start_kind(start)])
        r, loads = await self._eval(self._start, key, packed)
        return start_result(start, r, loads)

    def send_start(self, start: CallStart, now: float) -> asyncio.Future[Any]:
        """Rule 6: the start written on the link now (standalone only; it leaves with this loop turn's
        other commands); :func:`start_reply` reads its reply. Raises
        :class:`redis.exceptions.ConnectionError` at once when the link is down."""
        args = start_args(start, now, self.replica_id, self.key_ttl_ms)
        packed = pack([*args, start.program_id, self.lease_ms, self._fleet, start_kind(start)])
        return self._send(self._start, self.program_key(start.program_id), packed)

    async def finish_call(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> ProgramState | None:
        """Rules 4-5; ``end_program`` also ends the program in the same script (a one-call program)."""
        args = finish_args(finish, now, end_program, self.key_ttl_ms)
        key = self.program_key(finish.program_id)
        if self.cluster:
            r = await self._finish(keys=[key], args=args)
            if r is None:
                return None
            releases = [[as_text(x) for x in row] for row in r[4]]
            releases.append([as_text(r[0]), as_text(r[1]), finish.call_id])
            await self._release_calls(finish.program_id, releases, ended=int(r[3]) == 1, now=now)
        else:
            r = await self._eval(self._finish, key, pack([*args, self._fleet, finish.program_id]))
            if r is None:
                return None
        return state_from_hash(finish.program_id, hash_fields(r[2]))

    def send_finish(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> asyncio.Future[Any]:
        """Rule 6: the finish written on the link now (standalone only); :func:`finish_summary` reads
        its reply. Raises :class:`redis.exceptions.ConnectionError` at once when the link is down."""
        args = finish_args(finish, now, end_program, self.key_ttl_ms)
        packed = pack([*args, self._fleet, finish.program_id, "1"])
        return self._send(self._finish, self.program_key(finish.program_id), packed, flush=True)

    async def _release_calls(
        self, program_id: str, releases: list[list[str]], ended: bool, now: float
    ) -> None:
        await self._release(
            keys=[self._agg, self._activity],
            args=[
                self._fleet,
                program_id,
                json.dumps(releases),
                "1" if ended else "0",
                num(now),
                self.key_ttl_ms,
            ],
        )

    # --- programs ------------------------------------------------------------------------------

    async def create(self, program_id: str, now: float) -> bool:
        """Register a program before its first call (``POST /v1/programs``); False if it exists."""
        key = self.program_key(program_id)
        if self.cluster:
            created = await self._create(keys=[key], args=[num(now), self.key_ttl_ms])
            await self._create_fleet(keys=[self._activity], args=[num(now), program_id])
        else:
            created = await self._create(
                keys=[key, self._activity], args=[num(now), self.key_ttl_ms, program_id]
            )
        return int(created) == 1

    async def get(self, program_id: str) -> ProgramState | None:
        fields = await self.client.hgetall(self.program_key(program_id))
        if not fields:
            return None
        return state_from_hash(program_id, {as_text(k): v for k, v in fields.items()})

    async def end(self, program_id: str, now: float) -> ProgramState | None:
        key = self.program_key(program_id)
        if self.cluster:
            flat = await self._end(keys=[key])
            if flat is None:
                return None
            fields = hash_fields(flat)
            await self._release_calls(program_id, in_flight_releases(fields), ended=True, now=now)
        else:
            flat = await self._end(keys=[key, self._agg, self._activity], args=[self._fleet, program_id])
            if flat is None:
                return None
            fields = hash_fields(flat)
        return state_from_hash(program_id, fields)

    async def gc(self, now: float) -> list[str]:
        """Release dead replicas' calls (rule 3 of the module doc), then expire programs (rule 4)."""
        return sorted(state.program_id for state in await self.expire(now))

    async def expire(self, now: float) -> list[ProgramState]:
        """:meth:`gc`, with the expired programs as they were."""
        cutoff = now - self.expiry.idle_ttl + 1e-3  # a superset: each candidate is decided exactly below
        orphans, candidates = await self._gc(
            keys=[self._replicas, self._agg, self._activity], args=[self._fleet, num(cutoff)]
        )
        for rid, raw in orphans:
            program_id, call_id = split_member(raw)
            await self._drop(keys=[self.program_key(program_id)], args=[call_id, rid])
        expired: list[ProgramState] = []
        limits = [num(now), num(self.expiry.idle_ttl), num(self.expiry.stuck_ttl)]
        for raw in candidates:
            program_id = as_text(raw)
            key = self.program_key(program_id)
            if self.cluster:
                r = await self._expire(keys=[key], args=limits)
                status = int(r[0])
                if status != 0:
                    releases = in_flight_releases(hash_fields(r[1])) if status == 1 else []
                    await self._release_calls(program_id, releases, ended=True, now=now)
            else:
                r = await self._expire(
                    keys=[key, self._agg, self._activity], args=[*limits, self._fleet, program_id]
                )
                status = int(r[0])
            if status == 1:
                expired.append(state_from_hash(program_id, hash_fields(r[1])))
        return expired

    async def engine_loads(self) -> dict[str, int]:
        flat = await self.client.hgetall(self._agg)
        return {as_text(k): int(v) for k, v in flat.items() if int(v) > 0}

    async def program_count(self) -> int:
        """Programs in the activity index (the active-programs gauge)."""
        return int(await self.client.zcard(self._activity))
