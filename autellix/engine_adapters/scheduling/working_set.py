"""The KV working-set gate: which programs may keep their history in one engine's KV cache (issue 14).

Why (measured in the discrete-event simulation, README "Results")
------------------------------------------------------------------
Least attained service (Autellix §4, PLAS/ATLAS) serves the programs with the least service first, so
under load it keeps starting new programs ahead of old ones: every program alive at once makes
progress, which is exactly what makes the set of programs alive at once as large as it can be. Their
histories (the prompt prefix every later call repeats) no longer fit in the engine's KV cache, the
engine's LRU evicts the histories of the programs that wait, and each of their later calls recomputes
its whole history: the prefix-cache hit rate falls from ~0.9 to ~0.2 past the knee and the engine
spends its time on prefill it had already done. This is thrashing in the sense of paged virtual
memory (Denning's working sets), and the cure is the same: admit no more programs than their working
sets fit, and let the admitted ones finish their work while their pages are resident.

Theory of operation
-------------------
A program is *resident* on this engine from the moment one of its calls is let through the gate until
it has had no call queued or running for its TTL (rule 5), or until it is displaced (rule 4). The
gate holds the calls of non-resident programs; calls of resident programs go straight to the queue
policy (PLAS/ATLAS order them as before) and from there into the engine as the admission window and
the KV budget allow (scheduler.py).

1. Footprint. A resident's footprint is the KV its history holds or will hold here, in tokens:
   ``max(context, largest prompt of its active calls) + reserves of its active calls - shared``, where
   ``context`` is the largest prompt + output of its calls completed here, a call's reserve is the
   output it may still generate (its ``max_tokens``, or a default), and ``shared`` is what the
   engine reported as already cached for the program's first call here: a prefix other programs
   brought (a system prompt, tool schemas), counted once for the whole resident set (the largest
   such prefix) rather than once per program.
2. Admission. The gate's best waiting program becomes resident when the residents' total footprint
   plus its own stays within ``capacity * (1 - headroom)``; with no resident at all it is admitted
   whatever its size (nothing else could ever let it in). Admission stops at the first program that
   does not fit (no skipping ahead, as the paper's batch rule), so a large program is not starved by
   a stream of small ones.
3. Order at the gate: ``las`` (the program's attained service when its call arrived, then arrival:
   the queue policy's own criterion, applied to whole programs) or ``fifo`` (program age: the first
   time this gate saw the program, as Continuum's program-level FCFS).
4. Displacement. If the best waiting program does not fit, it may take the place of a resident that
   (a) has no call running in the engine, (b) has been served at least ``residency_quantum`` seconds
   of engine time here since it became resident, and (c) ranks behind it (``las``: more service;
   ``fifo`` never displaces, except for a starving program, rule 6). The worst such resident goes,
   its queued calls return to the gate, and its history is left to the engine's LRU. The quantum is
   what keeps this from thrashing: a program that lost its place pays one recomputation of its
   history when it comes back, and the quantum amortises that cost over at least that much service
   (a 10k-token history costs ~0.7 s of A100 prefill; the default quantum is 16 s). With an infinite
   quantum no resident is ever displaced.
5. TTL. A resident with nothing queued or running keeps its place for its TTL, then stops counting
   (its history stays in the engine until the LRU takes it). The TTL is learned from the program's
   own gaps (the time from its last call's completion to its next call's arrival: tool calls, user
   think time): ``ttl_factor`` times the larger of the last gap and a running average, clamped to
   ``[ttl_min, ttl_max]``; ``ttl_default`` before any gap was seen. A gap is measured only when the
   program had nothing else active, so parallel threads do not shorten it.
6. Anti-starvation (the queue's beta rule, held for everyone): a waiting program whose
   ``(W_p + W_gate) / max(T_p, service_floor) >= beta`` moves to the front of the gate and may
   displace any resident that satisfies (a) and (b), whatever its rank.
7. Unknown capacity (an engine that has not said how large its cache is): the gate is open, every
   program is resident at once, and nothing is ever held; the shell says so in its log.

Everything here is pure: times are passed in as ``now`` and must not go backwards.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["GateCall", "GateRelease", "GateStats", "WorkingSetGate", "WorkingSetParams"]

GateOrder = Literal["las", "fifo"]
_FIRST_SEEN_KEPT = 65536  # programs whose first arrival is remembered for the fifo order


@dataclass(frozen=True, slots=True)
class WorkingSetParams:
    """Settings of the gate (defaults and their reasons: module docstring)."""

    headroom: float = 0.05  # fraction of the KV cache left out of the residents' budget
    order: GateOrder = "las"
    residency_quantum: float = 16.0  # seconds of engine time before a resident may be displaced
    ttl_default: float = 2.0  # seconds an idle resident keeps its place before a gap was learned
    ttl_factor: float = 2.0
    ttl_min: float = 0.5
    ttl_max: float = 60.0
    gap_smoothing: float = 0.5  # weight of the newest gap in the running average
    beta: float | None = 10.0  # rule 6; None: no promotion at the gate
    service_floor: float = 0.1  # seconds; the T = 0 guard of rule 6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.headroom) and 0 <= self.headroom < 1):
            raise ValueError(f"headroom must be in [0, 1), got {self.headroom!r}")
        if self.order not in ("las", "fifo"):
            raise ValueError(f"order must be 'las' or 'fifo', got {self.order!r}")
        if math.isnan(self.residency_quantum) or self.residency_quantum < 0:
            raise ValueError(
                f"residency_quantum must be >= 0 (inf: never displace), got {self.residency_quantum!r}"
            )
        for name in ("ttl_default", "ttl_factor", "ttl_min", "ttl_max", "service_floor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.ttl_min > self.ttl_max:
            raise ValueError(f"ttl_min {self.ttl_min} is above ttl_max {self.ttl_max}")
        if not (0 < self.gap_smoothing <= 1):
            raise ValueError(f"gap_smoothing must be in (0, 1], got {self.gap_smoothing!r}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0 or null, got {self.beta!r}")


@dataclass(frozen=True, slots=True)
class GateCall:
    """What the gate needs to know of a call when it arrives."""

    call_id: str
    program_id: str
    service: float  # the program's attained service at the call's arrival (PLAS sum or ATLAS S), s
    program_wait: float  # the program's accumulated wait at arrival, s
    prompt_tokens: int
    reserve_tokens: int  # output tokens the call may still generate


@dataclass(frozen=True, slots=True)
class GateRelease:
    """What one ``release`` decided: calls that may enter the queue now, calls sent back to the gate."""

    released: tuple[str, ...] = ()  # call ids, in the order their programs were let in
    recalled: tuple[str, ...] = ()  # call ids of displaced residents: the shell takes them out of its queue
    displaced: tuple[str, ...] = ()  # program ids that lost their place


@dataclass(frozen=True, slots=True)
class GateStats:
    capacity_tokens: int | None
    residents: int
    resident_tokens: int  # the residents' footprint as counted by rule 1
    waiting_programs: int
    waiting_calls: int
    admitted_programs: int  # cumulative
    displaced_programs: int
    expired_programs: int
    promoted_programs: int


@dataclass(slots=True, eq=False)
class _Resident:
    program_id: str
    since: float
    context: int = 0
    shared: int | None = None  # None until the first completed call said what was cached
    served: float = 0.0  # engine seconds of calls completed here since it became resident
    service: float = 0.0  # its attained service as its latest call carried it (orders displacement)
    active: dict[str, tuple[int, int]] = field(default_factory=dict)  # call id -> (prompt, reserve)
    running: set[str] = field(default_factory=set)
    idle_since: float | None = None
    gap: float | None = None  # running average of its gaps, s
    last_gap: float = 0.0
    counted: int = 0  # its footprint() as the gate's running total holds it

    def footprint(self) -> int:
        prompts = max((p for p, _ in self.active.values()), default=0)
        reserves = sum(r for _, r in self.active.values())
        return max(self.context, prompts) + reserves - (self.shared or 0)


@dataclass(slots=True, eq=False)
class _Waiting:
    program_id: str
    key: tuple[float, int]
    service: float
    program_wait: float
    since: float
    calls: dict[str, GateCall] = field(default_factory=dict)
    promoted: bool = False
    stamp: int = 0


class WorkingSetGate:
    """Residency of programs on one engine (rules in the module docstring)."""

    def __init__(self, params: WorkingSetParams | None = None, capacity_tokens: int | None = None) -> None:
        self.params = params if params is not None else WorkingSetParams()
        self._capacity: int | None = None
        self.set_capacity(capacity_tokens)
        self._residents: dict[str, _Resident] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._heap: list[tuple[tuple[float, int], int, str]] = []
        self._call_program: dict[str, str] = {}  # every call the gate knows, waiting or resident
        self._first_seen: OrderedDict[str, int] = OrderedDict()
        self._due: list[tuple[float, int, str]] = []  # (promotion deadline, stamp, program id)
        self._seq = 0
        self._stamp = 0
        self._clock = -math.inf
        self._admitted = self._displaced = self._expired = self._promoted = 0
        # resident_tokens() kept as it changes (the shells ask at every admission decision and every
        # routing view): the sum of the residents' own footprints, and the largest shared prefix
        # (None: to be found again, after the resident holding it left).
        self._own_tokens = 0
        self._shared_max: int | None = 0
        # Idle residents by when their TTL runs out: (idle_since + ttl, idle_since, program id);
        # entries of residents that became active again or left are stale and skipped.
        self._idle: list[tuple[float, float, str]] = []

    # ----- configuration -----------------------------------------------------------------------------

    @property
    def capacity_tokens(self) -> int | None:
        return self._capacity

    def set_capacity(self, tokens: int | None) -> None:
        """The engine's KV cache size in tokens (rule 7: None keeps the gate open)."""
        if tokens is not None and tokens < 1:
            raise ValueError(f"capacity must be >= 1 token, got {tokens!r}")
        self._capacity = tokens

    # ----- events --------------------------------------------------------------------------------------

    def arrive(self, call: GateCall, now: float) -> bool:
        """A call arrived. True: its program is resident and the call may enter the queue now; False:
        it waits at the gate until ``release`` lets it through."""
        self._advance(now)
        if call.call_id in self._call_program:
            raise ValueError(f"call {call.call_id!r} is already known to the gate")
        pid = call.program_id
        self._call_program[call.call_id] = pid
        if pid not in self._first_seen:
            self._seq += 1
            self._first_seen[pid] = self._seq
            if len(self._first_seen) > _FIRST_SEEN_KEPT:
                self._first_seen.popitem(last=False)
        resident = self._residents.get(pid)
        if resident is not None and not self._expired_now(resident, now):
            self._learn_gap(resident, now)
            resident.active[call.call_id] = (call.prompt_tokens, call.reserve_tokens)
            self._recount(resident)
            resident.service = max(resident.service, call.service)
            return True
        if resident is not None:
            self._expire(pid)
        if self._capacity is None:
            resident = self._make_resident(pid, now)
            resident.active[call.call_id] = (call.prompt_tokens, call.reserve_tokens)
            self._recount(resident)
            resident.service = call.service
            return True
        waiting = self._waiting.get(pid)
        if waiting is None:
            waiting = _Waiting(pid, self._key(pid, call.service), call.service, call.program_wait, now)
            self._waiting[pid] = waiting
            self._push(waiting)
            self._schedule_promotion(waiting)
        waiting.calls[call.call_id] = call
        return False

    def release(self, now: float) -> GateRelease:
        """Rules 2-6: expire idle residents, then let waiting programs in while they fit."""
        self._advance(now)
        self._expire_idle(now)
        self._promote_starving(now)
        released: list[str] = []
        recalled: list[str] = []
        displaced: list[str] = []
        if self._capacity is None:
            for pid in list(self._waiting):
                released.extend(self._let_in(pid, now))
            return GateRelease(tuple(released), (), ())
        budget = self._capacity * (1.0 - self.params.headroom)
        used = self.resident_tokens()
        while (head := self._peek()) is not None:
            if head.program_id in displaced:
                break  # it just gave its place away: taking it back would only churn
            need = self._need(head)
            if self._residents and used + need > budget:
                victim = self._victim(head)
                if victim is None:
                    break
                recalled.extend(self._displace(victim, now))
                displaced.append(victim)
                used = self.resident_tokens()
                continue
            heapq.heappop(self._heap)
            released.extend(self._let_in(head.program_id, now))
            used = self.resident_tokens()
        return GateRelease(tuple(released), tuple(recalled), tuple(displaced))

    def started(self, call_id: str, now: float) -> None:
        """The call entered the engine."""
        self._advance(now)
        resident = self._resident_of(call_id)
        if resident is not None:
            resident.running.add(call_id)

    def requeued(self, call_id: str, now: float) -> None:
        """The call left the engine without finishing (preempted for a later resume)."""
        self._advance(now)
        resident = self._resident_of(call_id)
        if resident is not None:
            resident.running.discard(call_id)

    def finished(
        self,
        call_id: str,
        now: float,
        *,
        exec_time: float = 0.0,
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
    ) -> None:
        """The call is over (completed, failed or abandoned, wherever it was); idempotent."""
        self._advance(now)
        pid = self._call_program.pop(call_id, None)
        if pid is None:
            return
        waiting = self._waiting.get(pid)
        if waiting is not None and call_id in waiting.calls:
            del waiting.calls[call_id]
            if not waiting.calls:
                del self._waiting[pid]  # its heap entry turns stale
            return
        resident = self._residents.get(pid)
        if resident is None:
            return
        prompt, _ = resident.active.pop(call_id, (0, 0))
        resident.running.discard(call_id)
        if math.isfinite(exec_time) and exec_time > 0:
            resident.served += exec_time
        used_prompt = prompt if prompt_tokens is None else prompt_tokens
        if output_tokens is not None:
            resident.context = max(resident.context, used_prompt + output_tokens)
        if cached_tokens is not None and resident.shared is None:
            resident.shared = max(0, min(cached_tokens, used_prompt))
            if self._shared_max is not None:
                self._shared_max = max(self._shared_max, resident.shared)
        self._recount(resident)
        if not resident.active:
            resident.idle_since = now
            # Its TTL is fixed while it stays idle (a gap is learned only when a call arrives).
            heapq.heappush(self._idle, (now + self._ttl(resident), now, pid))

    # ----- inspection ----------------------------------------------------------------------------------

    def is_resident(self, program_id: str) -> bool:
        return program_id in self._residents

    def waiting_calls(self) -> tuple[str, ...]:
        """Call ids waiting at the gate, best program first (sorts: for tests and inspection)."""
        order = sorted(self._waiting.values(), key=lambda w: (-1.0, 0) if w.promoted else w.key)
        return tuple(call_id for w in order for call_id in w.calls)

    def resident_tokens(self) -> int:
        """Rule 1 summed over the residents: their own footprints + the largest shared prefix."""
        if self._shared_max is None:
            self._shared_max = max((r.shared or 0 for r in self._residents.values()), default=0)
        return self._own_tokens + self._shared_max

    def resident_fraction(self) -> float | None:
        """The residents' footprint as a share of the cache (None: capacity unknown)."""
        if self._capacity is None:
            return None
        return self.resident_tokens() / self._capacity

    def stats(self) -> GateStats:
        return GateStats(
            capacity_tokens=self._capacity,
            residents=len(self._residents),
            resident_tokens=self.resident_tokens(),
            waiting_programs=len(self._waiting),
            waiting_calls=sum(len(w.calls) for w in self._waiting.values()),
            admitted_programs=self._admitted,
            displaced_programs=self._displaced,
            expired_programs=self._expired,
            promoted_programs=self._promoted,
        )

    def ttl_of(self, program_id: str) -> float:
        """The TTL rule 5 gives the program now (the default for a program never seen)."""
        resident = self._residents.get(program_id)
        return self._ttl(resident) if resident is not None else self.params.ttl_default

    # ----- internals -----------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if now < self._clock:
            raise ValueError(f"the clock went backwards: now={now!r} after {self._clock!r}")
        self._clock = now

    def _key(self, program_id: str, service: float) -> tuple[float, int]:
        first = self._first_seen.get(program_id, self._seq)
        if self.params.order == "fifo":
            return (0.0, first)
        return (service, first)

    def _push(self, waiting: _Waiting) -> None:
        self._stamp += 1
        waiting.stamp = self._stamp
        key = (-1.0, self._stamp) if waiting.promoted else waiting.key
        if len(self._heap) > 2 * len(self._waiting) + 64:
            self._heap = [
                ((-1.0, w.stamp) if w.promoted else w.key, w.stamp, w.program_id)
                for w in self._waiting.values()
            ]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (key, waiting.stamp, waiting.program_id))

    def _peek(self) -> _Waiting | None:
        heap = self._heap
        while heap:
            _, stamp, pid = heap[0]
            waiting = self._waiting.get(pid)
            if waiting is not None and waiting.stamp == stamp:
                return waiting
            heapq.heappop(heap)
        return None

    def _need(self, waiting: _Waiting) -> int:
        prompts = max(c.prompt_tokens for c in waiting.calls.values())
        return prompts + sum(c.reserve_tokens for c in waiting.calls.values())

    def _make_resident(self, pid: str, now: float) -> _Resident:
        resident = _Resident(pid, now)  # footprint 0: nothing active, no context yet
        self._residents[pid] = resident
        self._admitted += 1
        return resident

    def _let_in(self, pid: str, now: float) -> list[str]:
        waiting = self._waiting.pop(pid)
        resident = self._make_resident(pid, now)
        resident.service = waiting.service
        for call in waiting.calls.values():
            resident.active[call.call_id] = (call.prompt_tokens, call.reserve_tokens)
        self._recount(resident)
        return list(waiting.calls)

    def _victim(self, head: _Waiting) -> str | None:
        """Rule 4: the worst resident that may give its place to ``head``, or None."""
        quantum = self.params.residency_quantum
        if math.isinf(quantum):
            return None
        if self.params.order == "fifo" and not head.promoted:
            return None
        worst: tuple[float, int] | None = None
        victim: str | None = None
        for pid, resident in self._residents.items():
            if resident.running or resident.served < quantum:
                continue
            rank = self._rank(resident)
            if not head.promoted and rank <= (head.service, self._first_seen.get(head.program_id, 0)):
                continue
            if worst is None or rank > worst:
                worst, victim = rank, pid
        return victim

    def _rank(self, resident: _Resident) -> tuple[float, int]:
        """A resident's place in the las order: its service as last seen, then its age."""
        return (resident.service, self._first_seen.get(resident.program_id, 0))

    def _displace(self, pid: str, now: float) -> list[str]:
        resident = self._residents.pop(pid)
        self._uncount(resident)
        self._displaced += 1
        calls = list(resident.active)
        if not calls:
            return []
        service = resident.service
        waiting = _Waiting(pid, self._key(pid, service), service, 0.0, now)
        for call_id in calls:
            prompt, reserve = resident.active[call_id]
            waiting.calls[call_id] = GateCall(call_id, pid, service, 0.0, prompt, reserve)
        self._waiting[pid] = waiting
        self._push(waiting)
        self._schedule_promotion(waiting)
        return calls

    def _expired_now(self, resident: _Resident, now: float) -> bool:
        return (
            not resident.active
            and resident.idle_since is not None
            and now - resident.idle_since > self._ttl(resident)
        )

    def _expire(self, pid: str) -> None:
        self._uncount(self._residents.pop(pid))
        self._expired += 1

    def _recount(self, resident: _Resident) -> None:
        """The resident's calls, context or shared prefix changed: update the running total."""
        fp = resident.footprint()
        self._own_tokens += fp - resident.counted
        resident.counted = fp

    def _uncount(self, resident: _Resident) -> None:
        """The resident left: take it out of the totals."""
        self._own_tokens -= resident.counted
        if self._shared_max is not None and (resident.shared or 0) >= self._shared_max:
            self._shared_max = None

    def _expire_idle(self, now: float) -> None:
        """Every resident ``_expired_now`` says is expired, found through the idle heap: a resident
        whose deadline is past ``now`` by more than rounding is not expired, so the scan stops there."""
        idle = self._idle
        horizon = now + 1e-9 * max(1.0, abs(now))
        kept: list[tuple[float, float, str]] = []
        while idle and idle[0][0] <= horizon:
            entry = heapq.heappop(idle)
            resident = self._residents.get(entry[2])
            if resident is None or resident.active or resident.idle_since != entry[1]:
                continue  # stale: it became active again, or left
            if self._expired_now(resident, now):
                self._expire(entry[2])
            else:
                kept.append(entry)  # within rounding of its deadline: ask again next time
        for entry in kept:
            heapq.heappush(idle, entry)

    def _ttl(self, resident: _Resident) -> float:
        params = self.params
        if resident.gap is None:
            return params.ttl_default
        gap = max(resident.gap, resident.last_gap)
        return min(params.ttl_max, max(params.ttl_min, params.ttl_factor * gap))

    def _learn_gap(self, resident: _Resident, now: float) -> None:
        if resident.active or resident.idle_since is None:
            return
        gap = max(0.0, now - resident.idle_since)
        alpha = self.params.gap_smoothing
        resident.gap = gap if resident.gap is None else alpha * gap + (1 - alpha) * resident.gap
        resident.last_gap = gap
        resident.idle_since = None

    def _schedule_promotion(self, waiting: _Waiting) -> None:
        """Rule 6: the ratio grows linearly while the program waits, so its deadline is known now."""
        beta = self.params.beta
        if beta is None:
            return
        served = max(waiting.service, self.params.service_floor)
        deadline = waiting.since + beta * served - waiting.program_wait
        heapq.heappush(self._due, (deadline, waiting.stamp, waiting.program_id))

    def _promote_starving(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, stamp, pid = heapq.heappop(due)
            waiting = self._waiting.get(pid)
            if waiting is None or waiting.promoted or waiting.stamp != stamp:
                continue
            waiting.promoted = True
            self._promoted += 1
            self._push(waiting)

    def _resident_of(self, call_id: str) -> _Resident | None:
        pid = self._call_program.get(call_id)
        return None if pid is None else self._residents.get(pid)
