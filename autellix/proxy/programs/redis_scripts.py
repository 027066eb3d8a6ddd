"""The Python side of the program table's Lua scripts: glue bodies, argument lists, reply decoding.

:mod:`.redis_table` owns the connections (redis-py, the ordered link) and the keys; this module owns
what crosses them, so that a script's argument list and its reply's layout are read in one place next
to ``redis_table.lua``, whose functions every glue body here calls. Pure code: strings and bytes in and
out, no IO.

1. Glue bodies come in threes, ``(standalone, cluster program half, cluster fleet half)``
   (:mod:`.redis_table` rule 2); ``None`` where an operation has no fleet half of its own.
2. Numbers are written with ``repr(float)`` (exact for doubles; the Lua side writes ``%.17g``), and
   measurements are sanitised before they are packed (rules.py rule 5), so NaN or infinity never
   reach Lua.
3. The standalone start and finish take ONE JSON argument (:func:`pack`): fewer arguments to pack is
   most of what a call costs the proxy on this path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .model import CallFinish, CallStart, CallStartResult, InFlightCall, ProgramState
from .rules import measured_seconds

FUNCTIONS = (Path(__file__).with_name("redis_table.lua")).read_text(encoding="utf-8")

# Glue bodies: (standalone script, cluster program half, cluster fleet half). KEYS/ARGV layouts are
# documented at each call site below.
START = (
    # standalone: one JSON argument (fewer arguments to pack is what a start costs the proxy) and the
    # fleet keys derived from its prefix, all in the fleet's slot
    "local a = cjson.decode(ARGV[1])\n"
    "local fleet, rid = a[12], a[8]\n"
    "local K = {fleet .. ':loads', fleet .. ':rloads:' .. rid, fleet .. ':calls:' .. rid, "
    "fleet .. ':lease:' .. rid, fleet .. ':replicas', fleet .. ':activity'}\n"
    "local r = prog_start(KEYS[1], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])\n"
    "if a[13] ~= '' then redis.call('HSETNX', KEYS[1], 'kind', a[13]) end\n"
    "local loads = fleet_start(K, r[1], r[2], member(a[10], a[2]), a[10], a[1], a[8], a[11], a[9])\n"
    "return {r, loads}",
    "local r = prog_start(KEYS[1], unpack(ARGV, 1, 9))\n"
    "if ARGV[10] and ARGV[10] ~= '' then redis.call('HSETNX', KEYS[1], 'kind', ARGV[10]) end\n"
    "return r",
    "return fleet_start(KEYS, ARGV[1], ARGV[2], member(ARGV[3], ARGV[4]), ARGV[3], ARGV[5], ARGV[6], "
    "ARGV[7], ARGV[8])",
)
FINISH = (
    # a[13] == '1' (brief): reply {ended, plas, wait, hash}, the hash read only when the program ends
    "local a = cjson.decode(ARGV[1])\n"
    "local r = prog_finish(KEYS[1], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[13])\n"
    "if not r then return nil end\n"
    "local releases = r[5]\n"
    "table.insert(releases, {r[1], r[2], a[1]})\n"
    "fleet_release({a[11] .. ':loads', a[11] .. ':activity'}, a[11], a[12], releases, r[4], a[2], a[10])\n"
    "if a[13] ~= '1' then return r end\n"
    "return {r[4], r[6], r[7], r[3]}",
    "return prog_finish(KEYS[1], unpack(ARGV, 1, 10))",
    None,
)
RELEASE = "return fleet_release(KEYS, ARGV[1], ARGV[2], cjson.decode(ARGV[3]), ARGV[4], ARGV[5], ARGV[6])"
END = (
    "local flat = prog_end(KEYS[1])\n"
    "if not flat then return nil end\n"
    "fleet_release({KEYS[2], KEYS[3]}, ARGV[1], ARGV[2], calls_in(flat), 1, '0', '0')\n"
    "return flat",
    "return prog_end(KEYS[1])",
    None,
)
EXPIRE = (
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
CREATE = (
    "local c = prog_create(KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])\n"
    "return c",
    "return prog_create(KEYS[1], ARGV[1], ARGV[2])",
    "return redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])",
)
GC = "return fleet_gc(KEYS, ARGV[1], ARGV[2])"
DROP = "return prog_drop(KEYS[1], ARGV[1], ARGV[2])"
LEASE = "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\nreturn redis.call('SADD', KEYS[2], ARGV[2])"


def num(value: float) -> str:
    return repr(float(value))


def pack(args: list[str]) -> str:
    return json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def start_args(start: CallStart, now: float, replica_id: str, key_ttl_ms: str) -> list[str]:
    """The program half's arguments of a start (``prog_start`` in the Lua file)."""
    return [
        num(now),
        start.call_id,
        start.engine_id,
        "1" if start.thread_id is not None else "0",
        start.thread_id or "",
        str(max(0, start.input_tokens)),
        "1" if start.pin else "0",
        replica_id,
        key_ttl_ms,
    ]


def start_kind(start: CallStart) -> str:
    """The kind argument after :func:`start_args` (standalone: ``a[13]``; cluster: ``ARGV[10]``)."""
    return start.kind or ""


def finish_args(finish: CallFinish, now: float, end_program: bool, key_ttl_ms: str) -> list[str]:
    """The program half's arguments of a finish (``prog_finish``), measurements sanitised (rule 5)."""
    return [
        finish.call_id,
        num(now),
        num(measured_seconds(finish.exec_time)),
        num(measured_seconds(finish.queue_wait)),
        "1" if finish.ok else "0",
        str(max(0, finish.prompt_tokens)),
        str(max(0, finish.cached_tokens)),
        str(max(0, finish.output_tokens)),
        "1" if end_program else "0",
        key_ttl_ms,
    ]


def as_text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def split_member(raw: bytes) -> tuple[str, str]:
    """Inverse of the Lua ``member``: ``<len(pid)>:<pid><call>`` in bytes."""
    size, _, rest = raw.partition(b":")
    n = int(size)
    return rest[:n].decode(), rest[n:].decode()


def hash_fields(flat: Sequence[bytes]) -> dict[str, bytes]:
    return {as_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def engine_counts(flat: Sequence[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(flat), 2):
        count = int(flat[i + 1])
        if count > 0:
            out[as_text(flat[i])] = count
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
        kind=kind.decode() if (kind := fields.get("kind")) else None,
    )


def start_result(start: CallStart, r: Sequence[Any], loads: Sequence[bytes]) -> CallStartResult:
    """A start script's reply (program half ``r``, fleet loads) as the table's result."""
    pinned = as_text(r[3])
    return CallStartResult(
        program_id=start.program_id,
        call_id=start.call_id,
        engine_id=as_text(r[1]),
        pin_created=int(r[2]) == 1,
        pinned_engine=pinned or None,
        service_plas=float(r[4]),
        service_atlas=float(r[5]),
        program_wait=float(r[6]),
        prior_calls=int(r[7]),
        completed_calls=int(r[8]),
        duplicate=int(r[0]) == 0,
        engine_loads=engine_counts(loads),
    )


def start_reply(start: CallStart, reply: Any) -> CallStartResult:
    """The result of a start written with :meth:`RedisProgramTable.send_start`."""
    r, loads = reply
    return start_result(start, r, loads)


def finish_summary(program_id: str, reply: Any) -> ProgramState | None:
    """A brief finish reply: the ended program as it was when it ended, None when it goes on (or the
    call was not in flight)."""
    if reply is None or int(reply[0]) != 1:
        return None
    return state_from_hash(program_id, hash_fields(reply[3]))


def in_flight_releases(fields: dict[str, bytes]) -> list[list[str]]:
    """(engine, replica, call id) of every in-flight call of a program hash."""
    out = []
    for name, raw in fields.items():
        if name.startswith("c:"):
            rec = json.loads(raw)
            out.append([rec[2], rec[8], name[2:]])
    return out
