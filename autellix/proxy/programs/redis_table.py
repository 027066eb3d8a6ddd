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
   Redis server's clock, independent of the ``now`` the callers pass (their logical clock).
4. Expiry. ``gc(now)`` reads candidates from the activity index and lets a script decide each one from
   the program's stored last activity with the rule of :func:`~.rules.is_expired`. Every key also gets a
   Redis TTL (``key_ttl``, default twice the stuck TTL) renewed on each write, so the data of a fleet that
   disappears entirely is removed by Redis itself.
5. Encoding. Numbers are written with ``%.17g`` (exact for doubles); measurements are sanitised here
   before they are sent (rule 5), so NaN or infinity never reach Lua.
6. The hot path. On a standalone Redis, starts and finishes travel on one ordered, pipelined link
   (:mod:`.redis_link`): each is written before its caller first suspends, commands written in one
   loop turn leave in one write, and Redis executes them in the order this replica wrote them
   (``ordered`` is then True; the store and the forwarder rely on it). :meth:`send_finish` writes a
   finish without waiting and its reply is brief (whether the program ended, and then its service and
   wait), so the common finish parses no program hash; :meth:`send_start` writes a start without
   waiting, for a call that goes ahead of its reply (``mirror.py``). Everything else (gc, leases,
   reads) goes through redis-py, as does everything in cluster mode.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from .model import CallFinish, CallStart, CallStartResult, InFlightCall, ProgramExpiry, ProgramState
from .redis_link import RedisLink
from .rules import measured_seconds

_FUNCTIONS = (Path(__file__).with_name("redis_table.lua")).read_text(encoding="utf-8")

# Glue bodies: (standalone script, cluster program half, cluster fleet half). KEYS/ARGV layouts are
# documented at each call site below.
_START = (
    # standalone: one JSON argument (fewer arguments to pack is what a start costs the proxy) and the
    # fleet keys derived from its prefix, all in the fleet's slot
    "local a = cjson.decode(ARGV[1])\n"
    "local fleet, rid = a[12], a[8]\n"
    "local K = {fleet .. ':loads', fleet .. ':rloads:' .. rid, fleet .. ':calls:' .. rid, "
    "fleet .. ':lease:' .. rid, fleet .. ':replicas', fleet .. ':activity'}\n"
    "local r = prog_start(KEYS[1], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])\n"
    "local loads = fleet_start(K, r[1], r[2], member(a[10], a[2]), a[10], a[1], a[8], a[11], a[9])\n"
    "return {r, loads}",
    "return prog_start(KEYS[1], unpack(ARGV, 1, 9))",
    "return fleet_start(KEYS, ARGV[1], ARGV[2], member(ARGV[3], ARGV[4]), ARGV[3], ARGV[5], ARGV[6], "
    "ARGV[7], ARGV[8])",
)
_FINISH = (
    # a[13] == '1' (brief): reply {ended, plas, wait} and read the hash only when the program ends
    "local a = cjson.decode(ARGV[1])\n"
    "local r = prog_finish(KEYS[1], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[13])\n"
    "if not r then return nil end\n"
    "local releases = r[5]\n"
    "table.insert(releases, {r[1], r[2], a[1]})\n"
    "fleet_release({a[11] .. ':loads', a[11] .. ':activity'}, a[11], a[12], releases, r[4], a[2], a[10])\n"
    "if a[13] ~= '1' then return r end\n"
    "return {r[4], r[6], r[7]}",
    "return prog_finish(KEYS[1], unpack(ARGV, 1, 10))",
    None,
)
_RELEASE = "return fleet_release(KEYS, ARGV[1], ARGV[2], cjson.decode(ARGV[3]), ARGV[4], ARGV[5], ARGV[6])"
_END = (
    "local flat = prog_end(KEYS[1])\n"
    "if not flat then return nil end\n"
    "fleet_release({KEYS[2], KEYS[3]}, ARGV[1], ARGV[2], calls_in(flat), 1, '0', '0')\n"
    "return flat",
    "return prog_end(KEYS[1])",
    None,
)
_EXPIRE = (
    "local r = prog_expire(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"
    "if r[1] ~= 0 then\n"
    "  local releases = {}\n"
    "  if r[1] == 1 then releases = calls_in(r[2]) end\n"
    "  fleet_release({KEYS[2], KEYS[3]}, ARGV[4], ARGV[5], releases, 1, '0', '0')\n"
    "end\n"
    "return r",
    "return prog_expire(KEYS[1], ARGV[1], ARGV[2], ARGV[3])",
    None,
)
_CREATE = (
    "local c = prog_create(KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])\n"
    "return c",
    "return prog_create(KEYS[1], ARGV[1], ARGV[2])",
    "return redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])",
)
_GC = "return fleet_gc(KEYS, ARGV[1], ARGV[2])"
_DROP = "return prog_drop(KEYS[1], ARGV[1], ARGV[2])"
_LEASE = "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\nreturn redis.call('SADD', KEYS[2], ARGV[2])"


def _num(value: float) -> str:
    return repr(float(value))


def _pack(args: list[str]) -> str:
    return json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _split_member(raw: bytes) -> tuple[str, str]:
    """Inverse of the Lua ``member``: ``<len(pid)>:<pid><call>`` in bytes."""
    size, _, rest = raw.partition(b":")
    n = int(size)
    return rest[:n].decode(), rest[n:].decode()


def _hash(flat: Sequence[bytes]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _loads(flat: Sequence[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(flat), 2):
        count = int(flat[i + 1])
        if count > 0:
            out[_text(flat[i])] = count
    return out


def state_from_hash(program_id: str, fields: dict[str, bytes]) -> ProgramState:
    """A :class:`ProgramState` from the program hash (fields as documented in ``redis_table.lua``)."""

    def number(name: str) -> float:
        raw = fields.get(name)
        return float(raw) if raw is not None else 0.0

    def optional(name: str) -> float | None:
        raw = fields.get(name)
        return float(raw) if raw is not None else None

    calls = []
    for name, raw in fields.items():
        if name.startswith("c:"):
            rec = json.loads(raw)
            calls.append(
                InFlightCall(
                    call_id=name[2:],
                    thread_id=rec[1] if rec[0] == "1" else None,
                    engine_id=rec[2],
                    arrival=float(rec[3]),
                    index=int(rec[4]),
                    service_plas_at_arrival=float(rec[5]),
                    service_atlas_at_arrival=float(rec[6]),
                    input_tokens=int(rec[7]),
                )
            )
    calls.sort(key=lambda call: call.index)
    pin = fields.get("pin")
    return ProgramState(
        program_id=program_id,
        created_at=number("created"),
        service_plas=number("plas"),
        service_atlas=number("atlas"),
        wait=number("wait"),
        pinned_engine=pin.decode() if pin else None,
        in_flight=tuple(calls),
        last_arrival=optional("larr"),
        last_completion=optional("ldone"),
        calls_started=int(number("started")),
        calls_completed=int(number("completed")),
        calls_failed=int(number("failed")),
        prompt_tokens=int(number("ptok")),
        cached_tokens=int(number("ctok")),
        output_tokens=int(number("otok")),
    )


def start_result(start: CallStart, r: Sequence[Any], loads: Sequence[bytes]) -> CallStartResult:
    """A start script's reply (program half ``r``, fleet loads) as the table's result."""
    pinned = _text(r[3])
    return CallStartResult(
        program_id=start.program_id,
        call_id=start.call_id,
        engine_id=_text(r[1]),
        pin_created=int(r[2]) == 1,
        pinned_engine=pinned or None,
        service_plas=float(r[4]),
        service_atlas=float(r[5]),
        program_wait=float(r[6]),
        prior_calls=int(r[7]),
        completed_calls=int(r[8]),
        duplicate=int(r[0]) == 0,
        engine_loads=_loads(loads),
    )


def start_reply(start: CallStart, reply: Any) -> CallStartResult:
    """The result of a start written with :meth:`RedisProgramTable.send_start`."""
    r, loads = reply
    return start_result(start, r, loads)


def finish_summary(reply: Any) -> tuple[float, float] | None:
    """A brief finish reply: the ended program's (service, wait), None when it goes on (or the call
    was not in flight)."""
    if reply is None or int(reply[0]) != 1:
        return None
    return float(reply[1]), float(reply[2])


def _releases(fields: dict[str, bytes]) -> list[list[str]]:
    """(engine, replica, call id) of every in-flight call of a program hash."""
    out = []
    for name, raw in fields.items():
        if name.startswith("c:"):
            rec = json.loads(raw)
            out.append([rec[2], rec[8], name[2:]])
    return out


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
        self._start = self._script(_START[mode])
        self._start_fleet = self._script(_START[2])
        self._finish = self._script(_FINISH[mode])
        self._release = self._script(_RELEASE)
        self._end = self._script(_END[mode])
        self._expire = self._script(_EXPIRE[mode])
        self._create = self._script(_CREATE[mode])
        self._create_fleet = self._script(_CREATE[2])
        self._gc = self._script(_GC)
        self._drop = self._script(_DROP)
        self._lease = self._script(_LEASE)
        self._link: RedisLink | None = None
        if not cluster:
            self._link = (
                RedisLink.from_url(url, socket_timeout) if url is not None else RedisLink.like(self.client)
            )

    def _script(self, body: str | None) -> AsyncScript:
        script: AsyncScript = self.client.register_script(_FUNCTIONS + "\n" + (body or "return nil"))
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

    async def connect(self) -> None:
        """Check the connection and load every script, so that each later call is one EVALSHA."""
        await self.client.ping()
        scripts = (self._start, self._start_fleet, self._finish, self._release, self._end, self._expire)
        for script in (*scripts, self._create, self._create_fleet, self._gc, self._drop, self._lease):
            script.sha = await self.client.script_load(script.script)
        if self._link is not None:
            await self._link.open()
        await self.renew_lease()

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

    def _start_args(self, start: CallStart, now: float) -> list[str]:
        return [
            _num(now),
            start.call_id,
            start.engine_id,
            "1" if start.thread_id is not None else "0",
            start.thread_id or "",
            str(max(0, start.input_tokens)),
            "1" if start.pin else "0",
            self.replica_id,
            self.key_ttl_ms,
        ]

    async def start_call(self, start: CallStart, now: float) -> CallStartResult:
        args = self._start_args(start, now)
        key = self.program_key(start.program_id)
        if self.cluster:
            r = await self._start(keys=[key], args=args)
            fleet_args = [r[0], r[1], start.program_id, start.call_id, args[0], self.replica_id]
            loads = await self._start_fleet(keys=list(self._own), args=[*fleet_args, self.lease_ms, args[8]])
            return start_result(start, r, loads)
        packed = _pack([*args, start.program_id, self.lease_ms, self._fleet])
        r, loads = await self._eval(self._start, key, packed)
        return start_result(start, r, loads)

    def send_start(self, start: CallStart, now: float) -> asyncio.Future[Any]:
        """Rule 6: the start written on the link now (standalone only; it leaves with this loop turn's
        other commands); :func:`start_reply` reads its reply. Raises
        :class:`redis.exceptions.ConnectionError` at once when the link is down."""
        packed = _pack([*self._start_args(start, now), start.program_id, self.lease_ms, self._fleet])
        return self._send(self._start, self.program_key(start.program_id), packed)

    def _finish_args(self, finish: CallFinish, now: float, end_program: bool) -> list[str]:
        return [
            finish.call_id,
            _num(now),
            _num(measured_seconds(finish.exec_time)),
            _num(measured_seconds(finish.queue_wait)),
            "1" if finish.ok else "0",
            str(max(0, finish.prompt_tokens)),
            str(max(0, finish.cached_tokens)),
            str(max(0, finish.output_tokens)),
            "1" if end_program else "0",
            self.key_ttl_ms,
        ]

    async def finish_call(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> ProgramState | None:
        """Rules 4-5; ``end_program`` also ends the program in the same script (a one-call program)."""
        args = self._finish_args(finish, now, end_program)
        key = self.program_key(finish.program_id)
        if self.cluster:
            r = await self._finish(keys=[key], args=args)
            if r is None:
                return None
            releases = [[_text(x) for x in row] for row in r[4]]
            releases.append([_text(r[0]), _text(r[1]), finish.call_id])
            await self._release_calls(finish.program_id, releases, ended=int(r[3]) == 1, now=now)
        else:
            r = await self._eval(self._finish, key, _pack([*args, self._fleet, finish.program_id]))
            if r is None:
                return None
        return state_from_hash(finish.program_id, _hash(r[2]))

    def send_finish(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> asyncio.Future[Any]:
        """Rule 6: the finish written on the link now (standalone only); :func:`finish_summary` reads
        its reply. Raises :class:`redis.exceptions.ConnectionError` at once when the link is down."""
        args = self._finish_args(finish, now, end_program)
        packed = _pack([*args, self._fleet, finish.program_id, "1"])
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
                _num(now),
                self.key_ttl_ms,
            ],
        )

    # --- programs ------------------------------------------------------------------------------

    async def create(self, program_id: str, now: float) -> bool:
        """Register a program before its first call (``POST /v1/programs``); False if it exists."""
        key = self.program_key(program_id)
        if self.cluster:
            created = await self._create(keys=[key], args=[_num(now), self.key_ttl_ms])
            await self._create_fleet(keys=[self._activity], args=[_num(now), program_id])
        else:
            created = await self._create(
                keys=[key, self._activity], args=[_num(now), self.key_ttl_ms, program_id]
            )
        return int(created) == 1

    async def get(self, program_id: str) -> ProgramState | None:
        fields = await self.client.hgetall(self.program_key(program_id))
        if not fields:
            return None
        return state_from_hash(program_id, {_text(k): v for k, v in fields.items()})

    async def end(self, program_id: str, now: float) -> ProgramState | None:
        key = self.program_key(program_id)
        if self.cluster:
            flat = await self._end(keys=[key])
            if flat is None:
                return None
            fields = _hash(flat)
            await self._release_calls(program_id, _releases(fields), ended=True, now=now)
        else:
            flat = await self._end(keys=[key, self._agg, self._activity], args=[self._fleet, program_id])
            if flat is None:
                return None
            fields = _hash(flat)
        return state_from_hash(program_id, fields)

    async def gc(self, now: float) -> list[str]:
        """Release dead replicas' calls (rule 3 of the module doc), then expire programs (rule 7)."""
        cutoff = now - self.expiry.idle_ttl + 1e-3  # a superset: each candidate is decided exactly below
        orphans, candidates = await self._gc(
            keys=[self._replicas, self._agg, self._activity], args=[self._fleet, _num(cutoff)]
        )
        for rid, raw in orphans:
            program_id, call_id = _split_member(raw)
            await self._drop(keys=[self.program_key(program_id)], args=[call_id, rid])
        expired = []
        limits = [_num(now), _num(self.expiry.idle_ttl), _num(self.expiry.stuck_ttl)]
        for raw in candidates:
            program_id = _text(raw)
            key = self.program_key(program_id)
            if self.cluster:
                r = await self._expire(keys=[key], args=limits)
                status = int(r[0])
                if status != 0:
                    releases = _releases(_hash(r[1])) if status == 1 else []
                    await self._release_calls(program_id, releases, ended=True, now=now)
            else:
                r = await self._expire(
                    keys=[key, self._agg, self._activity], args=[*limits, self._fleet, program_id]
                )
                status = int(r[0])
            if status == 1:
                expired.append(program_id)
        return sorted(expired)

    async def engine_loads(self) -> dict[str, int]:
        flat = await self.client.hgetall(self._agg)
        return {_text(k): int(v) for k, v in flat.items() if int(v) > 0}

    async def program_count(self) -> int:
        """Programs in the activity index (the active-programs gauge)."""
        return int(await self.client.zcard(self._activity))
