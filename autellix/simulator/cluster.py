"""Discrete-event simulation of a cluster: proxy → router → per-engine queue → simulated engines.

Implements DESIGN.md §1-§2 in virtual time with the *same* pure core the live services run: the
program table (proxy/programs), the routers (proxy/routing), the queue policies
(engine_adapters/scheduling) and :class:`SimEngine`. No clock, no asyncio: a heap of events.

Theory of operation
-------------------
Events are ``(time, seq, kind, ...)`` in a heap; ``seq`` breaks ties in push order, so a run is a pure
function of its inputs. Kinds: a program arrives; a call becomes ready; an engine step starts; an
engine step ends. Idle stretches cost nothing: engines step only while they hold work.

1. A program's roots become ready at its arrival + their ``tool_delay``; any other call when the last
   of its parents has completed, + its ``tool_delay``.
2. A ready call is issued at the proxy: read the program's pin, route over :class:`EngineView` s built
   from the table's outstanding counts and the engines' last step, ``start_call`` on the table (which
   may redirect to the pin and returns the priority context), then hand the call to the chosen
   engine's shell by the preset's mode:
   - ``passthrough``: straight into the engine (vLLM baselines, no queue of ours);
   - ``sidecar``: into that engine's :class:`SidecarScheduler` (engine_adapters/scheduler.py), the
     very object the live sidecar runs, which admits into the unmodified engine (rule 4);
   - ``engine``: into the local queue, which forms the engine's batch itself (rule 5).
3. Events of one virtual instant are handled in three phases: every arrival, completion, probe and
   tick first; then the sidecars' admission decisions (one ``select`` per engine that had an event);
   then the engine steps that start at that instant. So a step starting at ``t`` sees everything
   added at ``t`` (same-time arrivals and the children of calls that finished at ``t`` included),
   and a sidecar weighs all calls of an instant together, as the engine-integrated scheduler does.
   A step's outputs are applied at ``t + duration``, when the next step is scheduled. Quiet
   stepping: only first tokens and finishes.
4. Sidecar mode drives the scheduler with the live sidecar's events, in virtual time: a call arrives
   (``enter``), a call completes (``leave`` with what the engine reported), a load probe every
   ``probe_interval`` (``observe``: the engine's running and waiting counts, KV usage and capacity, as
   its ``/metrics`` would say them) and a tick every ``tick_interval`` (``tick``: service charging,
   promotions, gate expiry); after each, ``select`` says which calls enter the engine. Timers run on
   a fixed phase (multiples of their interval) while the engine or its scheduler holds work, so an
   idle engine costs no events.
5. Sidecar abort-and-resume (presets with ``preempt``): at the decision after each tick the scheduler
   may name a running call to stop; it is aborted in the engine and resumed as below when the
   scheduler admits it again. A stop can fall inside an engine step: a call that step finishes
   completes (its end was on the way), one the step gave its first token loses it with the abort; the
   step's tokens count as generated (at most one per stop, as if delivered).
6. Engine-integrated mode (the paper's modified vLLM, Autellix §5): every ``schedule_interval`` steps,
   and at any step after an arrival or a completion, running calls are charged the engine time since
   their last charge (quantum demotion), then ``schedule_batch`` ranks running and waiting calls
   together; a call fits while the batch stays within ``max_num_seqs`` and its reserved KV (prompt +
   output tokens) within the cache. :class:`SimEngine` has no hook to pick its batch, so the policy's
   choice is imposed from outside: victims are aborted (abort-and-resume, reference.md §6: the full
   blocks they computed stay in the prefix cache) and re-added later as a new request whose prompt is
   the original prompt + the tokens generated so far, asking only for the rest of the output.
7. Measurements. The call record's queue wait is everything before the engine first scheduled the
   call, in our queue and in the engine's own (summed over spells), so the ``vllm`` presets, whose
   calls wait inside the engine, count their wait too; its exec time is from that first scheduling to
   completion. What the program table is told (service for PLAS/ATLAS) is what the live sidecar
   measures: admission to completion (the simulated engine reports no queue time of its own), and in
   ``passthrough`` mode, where no sidecar measures anything, the engine's own scheduling to completion.
   On completion the children are released; a program ends with its last call and its table entry is
   then dropped.
8. Priority context: ``autellix`` places chains by the PLAS sum and DAGs by the ATLAS critical path;
   ``plas``/``atlas`` use one measure for all; ``srpt`` gets the program's remaining work (remaining
   output tokens x a batch-1 decode step + prompt tokens x the per-token prefill cost), clairvoyantly.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowParams
from autellix.engine_adapters.scheduler import (
    MAX_OUTPUT_RESERVE,
    Budget,
    CallTokens,
    CallUsage,
    SidecarScheduler,
)
from autellix.engine_adapters.scheduling import Admission, QueuedCall, QueuePolicy, get_policy
from autellix.engine_adapters.scheduling.working_set import WorkingSetGate
from autellix.loadgen.program import CallSpec, ProgramSpec
from autellix.proxy.programs import CallFinish, CallStart, MemoryProgramTable
from autellix.proxy.routing import EngineView, RouteRequest, get_router
from autellix.records import CallRecord, EngineRecord, MetricsSummary, ProgramRecord, summarize
from autellix.simulator.cluster_prompts import ProgramPrompts, TokenCache
from autellix.simulator.cluster_systems import SystemPreset
from autellix.simulator.engine import EngineConfig, SimEngine, SimRequest, StepResult
from autellix.simulator.stepmodel import StepProfile, StepShape, get_profile
from autellix.simulator.tokenizer import generated_token_stream, stream_token_id

__all__ = ["ClusterConfig", "SimulationResult", "simulate"]

_ARRIVE, _READY, _START, _END, _PROBE, _TICK, _PUMP = 0, 1, 2, 3, 4, 5, 6
# Within one virtual instant: every event first, then the sidecars' admission decisions, then the
# engine steps that start then (rule 3).
_PHASE = {_PUMP: 1, _START: 2}


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The hardware and the shells' knobs (engine fields None: the profile's vLLM defaults)."""

    num_engines: int = 1
    profile: str = "a100-llama3-8b"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    max_model_len: int = 131072  # Llama-3.1 context length
    overprovision: int = 2  # sidecar: calls waiting inside the engine behind a full batch
    max_in_flight: int | None = None  # sidecar window's bound; None: max_num_seqs + overprovision
    window_mode: str = "adaptive"  # sidecar window: "adaptive" (as live) or "fixed" (always the bound)
    initial_window: int = 8
    probe_interval: float = 0.1  # sidecar load probes, virtual seconds (the live default)
    tick_interval: float = 0.05  # sidecar timer ticks, virtual seconds (the live default)
    schedule_interval: int = 20  # engine mode: steps between preempting rounds (the paper's N)
    seed: int = 0  # generated token ids
    max_time: float | None = None  # stop the clock here (programs not done count as incomplete)
    fast_decode: bool = True  # the engines' fast path (engine.py rule 7); False: the per-step reference

    def engine_config(self, profile: StepProfile, caching: bool, priority: bool) -> EngineConfig:
        return EngineConfig(
            num_gpu_blocks=self.num_gpu_blocks or profile.num_gpu_blocks,
            max_num_seqs=self.max_num_seqs or profile.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or profile.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_prefix_caching=caching,
            policy="priority" if priority else "fcfs",
            seed=self.seed,
            fast_decode=self.fast_decode,
        )

    def window_params(self, max_num_seqs: int) -> WindowParams:
        bound = self.max_in_flight or max_num_seqs + self.overprovision
        return WindowParams(
            initial=min(self.initial_window, bound),
            maximum=bound,
            overprovision=self.overprovision,
            adaptive=self.window_mode == "adaptive",
        )


@dataclass(frozen=True, slots=True)
class SimulationResult:
    system: str
    programs: tuple[ProgramRecord, ...]
    calls: tuple[CallRecord, ...]
    engines: tuple[EngineRecord, ...]
    summary: MetricsSummary
    end_time: float  # virtual time of the last event
    events: int
    policy_preemptions: int  # engine mode: calls the queue policy took out of the engine


@dataclass(slots=True, eq=False)
class _Program:
    spec: ProgramSpec
    record: ProgramRecord
    prompts: ProgramPrompts
    pending: list[int]  # parents not yet completed, per call
    remaining_output: int  # output tokens of calls not yet completed (srpt)
    children: tuple[tuple[int, ...], ...]
    is_chain: bool


@dataclass(slots=True, eq=False)
class _Call:
    program: _Program
    spec: CallSpec
    call_id: str
    prompt: list[int]
    arrival: float
    rid: str = ""  # current engine request id
    spells: int = 0
    admitted: float = -1.0  # first admission
    spell_start: float = 0.0  # current admission (engine mode: last charge too)
    waiting_since: float = 0.0
    exec_time: float = 0.0
    queue_wait: float = 0.0
    generated: int = 0  # tokens generated by earlier spells
    first_token: float = -1.0
    scheduled: float = -1.0  # first scheduled by the engine (its first spell)
    spell_scheduled: bool = False  # the current spell has been scheduled by the engine
    engine_wait: float = 0.0  # time inside the engine's queue, summed over spells
    cached: int = -1
    preemptions: int = 0
    priority: int = 0


@dataclass(slots=True, eq=False)
class _Engine:
    engine_id: str
    engine: SimEngine
    queue: QueuePolicy | None  # engine mode: the queue that forms the batch
    scheduler: SidecarScheduler | None  # sidecar mode: the live sidecar's admission core
    waiting: dict[str, _Call] = field(default_factory=dict)  # in our queue (or at the gate), by call id
    running: dict[str, _Call] = field(default_factory=dict)  # in the engine, by call id
    requests: dict[str, _Call] = field(default_factory=dict)  # in the engine, by request id
    busy: bool = False  # a step is pending or running
    timers: bool = False  # sidecar probe and tick events are scheduled
    pump_queued: bool = False  # a sidecar admission decision is due at the end of this instant
    preempt_due: bool = False  # a tick passed: the decision may stop a call (abort-and-resume)
    in_flight: int = 0
    last_running: int = 0
    last_waiting: int = 0
    steps_since_round: int = 0
    dirty: bool = True

    def resident(self) -> float | None:
        """The working-set gate's resident share of the cache, as the sidecar reports it."""
        gate = self.scheduler.gate if self.scheduler is not None else None
        return gate.resident_fraction() if gate is not None else None


class _Cluster:
    def __init__(self, system: SystemPreset, config: ClusterConfig, tokens: TokenCache | None) -> None:
        if config.num_engines < 1:
            raise ValueError(f"num_engines must be >= 1, got {config.num_engines}")
        if config.schedule_interval < 1 or config.overprovision < 0:
            raise ValueError("schedule_interval must be >= 1 and overprovision >= 0")
        self.system = system
        self.config = config
        self.profile = get_profile(config.profile)
        ecfg = config.engine_config(self.profile, system.prefix_caching, system.engine_priority)
        self.max_seqs = ecfg.max_num_seqs
        self.kv_tokens = ecfg.num_gpu_blocks * ecfg.block_size
        self.block_size = ecfg.block_size
        if config.probe_interval <= 0 or config.tick_interval <= 0:
            raise ValueError("probe_interval and tick_interval must be > 0")
        self.engines = [
            self._engine(f"engine-{i}", SimEngine(ecfg, self.profile)) for i in range(config.num_engines)
        ]
        self.by_id = {e.engine_id: e for e in self.engines}
        self.router = get_router(system.router)
        self.table = MemoryProgramTable()
        self.tokens = tokens if tokens is not None else TokenCache()
        self.heap: list[tuple[float, int, int, int, object]] = []
        self.seq = 0
        self.now = 0.0
        self.events = 0
        self.calls: list[CallRecord] = []
        self.policy_preemptions = 0
        self.decode_cost = self.profile.step_time_s(StepShape(1, 1, 1000))
        self.prefill_cost = self.profile.b / 1000.0 if self.profile.fixed_step_s is None else 0.0

    def _engine(self, engine_id: str, engine: SimEngine) -> _Engine:
        system = self.system
        if system.mode == "passthrough":
            return _Engine(engine_id, engine, None, None)
        queue_name = "plas" if system.queue == "autellix" else system.queue
        queue = get_policy(queue_name, system.queue_params)
        if system.mode == "engine":
            return _Engine(engine_id, engine, queue, None)
        gate = None if system.working_set is None else WorkingSetGate(system.working_set)
        window = AdmissionWindow(self.config.window_params(self.max_seqs))
        scheduler = SidecarScheduler(queue, window, gate, kv_budget=system.kv_budget, preempt=system.preempt)
        return _Engine(engine_id, engine, None, scheduler)

    # -- the event loop --------------------------------------------------------------------------

    def push(self, time: float, kind: int, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (time, _PHASE.get(kind, 0), self.seq, kind, payload))

    def run(self, programs: Sequence[ProgramSpec]) -> list[_Program]:
        states: list[_Program] = []
        for spec in programs:
            record = ProgramRecord(
                spec.program_id,
                spec.workload,
                spec.kind,
                spec.arrival_time,
                spec.num_calls,
                expected_tokens=spec.total_output_tokens,
            )
            state = _Program(
                spec,
                record,
                ProgramPrompts(spec, self.tokens),
                [len(c.parents) for c in spec.calls],
                spec.total_output_tokens,
                spec.children(),
                spec.is_chain,
            )
            states.append(state)
            self.push(spec.arrival_time, _ARRIVE, state)
        limit = self.config.max_time
        heap = self.heap
        while heap:
            time, _, _, kind, payload = heapq.heappop(heap)
            if limit is not None and time > limit:
                break
            self.now = time
            self.events += 1
            if kind == _END:
                assert isinstance(payload, tuple)
                self.step_end(payload[0], payload[1])
            elif kind == _START:
                assert isinstance(payload, _Engine)
                self.step_start(payload)
            elif kind == _READY:
                assert isinstance(payload, _Call)
                self.issue(payload)
            elif kind == _PROBE:
                assert isinstance(payload, _Engine)
                self.probe(payload)
            elif kind == _TICK:
                assert isinstance(payload, _Engine)
                self.tick(payload)
            elif kind == _PUMP:
                assert isinstance(payload, _Engine)
                self.pump(payload)
            else:
                assert isinstance(payload, _Program)
                for index in payload.spec.roots():
                    self.make_ready(payload, payload.spec.calls[index])
        return states

    def make_ready(self, program: _Program, spec: CallSpec) -> None:
        call_id = f"{program.spec.program_id}/{spec.index}"
        prompt = program.prompts.prompt_ids(spec)
        call = _Call(program, spec, call_id, prompt, self.now + spec.tool_delay)
        self.push(call.arrival, _READY, call)

    # -- the proxy ---------------------------------------------------------------------------------

    def issue(self, call: _Call) -> None:
        now = self.now
        pid = call.program.spec.program_id
        table = self.table
        state = table.get(pid)
        loads = table.engine_loads()
        views = [
            EngineView(
                e.engine_id,
                True,
                loads.get(e.engine_id, 0),
                e.last_waiting,
                e.last_running,
                None,
                e.resident(),
            )
            for e in self.engines
        ]
        thread = str(call.spec.thread)
        decision = self.router.route(
            RouteRequest(pid, thread, len(call.prompt), "", state.pinned_engine if state else None, now),
            views,
        )
        started = table.start_call(
            CallStart(pid, call.call_id, decision.engine_id, thread, len(call.prompt), decision.pin), now
        )
        eng = self.by_id[started.engine_id]
        call.waiting_since = now
        if eng.queue is None and eng.scheduler is None:
            self.admit(eng, call, 0)
            self.wake(eng)
            return
        kind = self.system.queue
        use_atlas = kind == "atlas" or (kind == "autellix" and not call.program.is_chain)
        service = started.service_atlas if use_atlas else started.service_plas
        remaining = None
        if kind == "srpt":
            remaining = (
                call.program.remaining_output * self.decode_cost + len(call.prompt) * self.prefill_cost
            )
            service = remaining  # what a working-set gate ranks programs by under srpt
        queued = QueuedCall(
            call.call_id,
            pid,
            thread,
            now,
            service,
            started.program_wait,
            len(call.prompt) + call.spec.output_tokens,
            remaining,
        )
        eng.waiting[call.call_id] = call
        if eng.scheduler is not None:
            tokens = CallTokens(len(call.prompt), min(call.spec.output_tokens, MAX_OUTPUT_RESERVE))
            eng.scheduler.enter(queued, now, tokens, resumable=True)
            self.start_timers(eng)
            self.pump_soon(eng)
        else:
            assert eng.queue is not None
            eng.queue.add(queued, now)
            eng.dirty = True
        self.wake(eng)

    # -- the shells ----------------------------------------------------------------------------------

    def pump_soon(self, eng: _Engine) -> None:
        """Ask for the sidecar's admission decision at the end of this instant (once)."""
        if not eng.pump_queued:
            eng.pump_queued = True
            self.push(self.now, _PUMP, eng)

    def pump(self, eng: _Engine) -> None:
        """Sidecar rule 4: whatever the scheduler admits now enters the engine."""
        scheduler = eng.scheduler
        assert scheduler is not None
        eng.pump_queued = False
        self.admit_all(eng, scheduler.select(self.now))
        if eng.preempt_due:
            eng.preempt_due = False
            self.stop_for_better(eng, scheduler)
        self.wake(eng)

    def stop_for_better(self, eng: _Engine, scheduler: SidecarScheduler) -> None:
        """Abort-and-resume (scheduler.py rule 5): stop what the scheduler says, admit what it frees."""
        if scheduler.queue.best_waiting(self.now) is None:
            return
        for call in eng.running.values():
            state = eng.engine.request_state(call.rid)
            scheduler.progress(call.call_id, call.generated + (state.num_generated if state else 0))
        stopped = scheduler.preempt(self.now)
        if not stopped:
            return
        for preemption in stopped:
            self.preempt(eng, preemption.call_id)
        self.admit_all(eng, scheduler.select(self.now))

    def admit_all(self, eng: _Engine, admissions: Sequence[Admission]) -> None:
        for admission in admissions:
            self.admit(eng, eng.waiting.pop(admission.call_id), admission.level)

    def start_timers(self, eng: _Engine) -> None:
        """Probe and tick on their fixed phase from the next multiple of the interval on."""
        if eng.timers:
            return
        eng.timers = True
        config = self.config
        for kind, interval in ((_PROBE, config.probe_interval), (_TICK, config.tick_interval)):
            self.push(math.floor(self.now / interval + 1.0) * interval, kind, eng)

    def _timer_again(self, eng: _Engine, kind: int, interval: float) -> None:
        scheduler = eng.scheduler
        assert scheduler is not None
        if scheduler.in_flight or scheduler.waiting or eng.engine.has_unfinished_requests():
            self.push(self.now + interval, kind, eng)
        elif kind == _PROBE:
            eng.timers = False  # the tick stops at its next firing too (see tick)

    def probe(self, eng: _Engine) -> None:
        """What the engine's /metrics says now, as the live sidecar's load probe reads it."""
        scheduler = eng.scheduler
        assert scheduler is not None
        stats = eng.engine.stats
        load = EngineLoad(
            stats.num_running,
            stats.num_waiting,
            stats.kv_cache_usage,
            float(stats.num_preemptions),
            self.kv_tokens,
        )
        scheduler.observe(load, self.now)
        self.pump_soon(eng)
        self._timer_again(eng, _PROBE, self.config.probe_interval)

    def tick(self, eng: _Engine) -> None:
        scheduler = eng.scheduler
        assert scheduler is not None
        if not eng.timers:
            return  # idle since the last probe: the timers stopped
        scheduler.tick(self.now)
        eng.preempt_due = scheduler.preempt_params is not None
        self.pump_soon(eng)
        self.push(self.now + self.config.tick_interval, _TICK, eng)

    def admit(self, eng: _Engine, call: _Call, level: int) -> None:
        now = self.now
        call.spells += 1
        if call.spells == 1:
            call.admitted = now
        call.queue_wait += now - call.waiting_since
        call.spell_start = now
        call.spell_scheduled = False
        call.rid = call.call_id if call.spells == 1 else f"{call.call_id}~{call.spells}"
        prompt = call.prompt
        if call.generated:
            stream = generated_token_stream(self.config.seed, call.call_id)
            prompt = prompt + [stream_token_id(stream, i) for i in range(call.generated)]
        hashes: list[int] = []
        if self.system.prefix_caching:
            hashes = call.program.prompts.block_hashes(call.spec, prompt, self.block_size)
        eng.engine.add_request(
            SimRequest(
                call.rid,
                prompt,
                call.spec.output_tokens - call.generated,
                now,
                level if self.system.engine_priority else 0,
                token_key=call.call_id,
                prefix_hashes=hashes,
            )
        )
        eng.requests[call.rid] = call
        eng.running[call.call_id] = call
        eng.in_flight += 1

    def wake(self, eng: _Engine) -> None:
        if not eng.busy:
            eng.busy = True
            self.push(self.now, _START, eng)

    def step_start(self, eng: _Engine) -> None:
        if self.system.mode == "engine":
            eng.steps_since_round += 1
            if eng.steps_since_round >= self.config.schedule_interval:
                self.schedule_round(eng)
            elif eng.dirty:
                self.fill_round(eng)
        result = eng.engine.step(self.now, quiet=True)
        if result.duration <= 0.0 and not result.outputs:
            eng.busy = False  # nothing can run (nothing left, or nothing fits): wait for an event
            eng.last_running, eng.last_waiting = result.num_running, result.num_waiting
            return
        self.push(self.now + result.duration, _END, (eng, result))

    def schedule_round(self, eng: _Engine) -> None:
        """Engine-integrated rule 5: charge service, rank, impose the policy's batch on the engine."""
        now = self.now
        queue = eng.queue
        assert queue is not None
        eng.dirty = False
        eng.steps_since_round = 0
        for call in eng.running.values():
            queue.record_service(call.call_id, now - call.spell_start, now)
            call.exec_time += now - call.spell_start
            call.spell_start = now
        plan = queue.schedule_batch(now, Budget(self.max_seqs, self.kv_tokens, force_first=True))
        for call_id in plan.preempted:
            self.preempt(eng, call_id)
        for admission in plan.admitted:
            call = eng.waiting.pop(admission.call_id)
            self.admit(eng, call, admission.level)

    def fill_round(self, eng: _Engine) -> None:
        """Rule 5 between full rounds: admit into free room only, preempting nobody."""
        queue = eng.queue
        assert queue is not None
        eng.dirty = False
        reserved = sum(len(c.prompt) + c.spec.output_tokens for c in eng.running.values())
        room = Budget(self.max_seqs - len(eng.running), self.kv_tokens - reserved, not eng.running)
        for admission in queue.select_admissions(self.now, room):
            self.admit(eng, eng.waiting.pop(admission.call_id), admission.level)

    def preempt(self, eng: _Engine, call_id: str) -> None:
        now = self.now
        state = eng.engine.request_state(eng.running[call_id].rid)
        assert state is not None
        if state.status == "finished":
            # It finished in the step in flight: the end reaches the client before the stop can, as
            # a live stream that ends first (the gate's leave then counts it finished).
            return
        call = eng.running.pop(call_id)
        eng.engine.abort_request(call.rid)
        del eng.requests[call.rid]
        call.generated += state.num_generated
        call.preemptions += state.num_preemptions + 1
        call.exec_time += now - call.spell_start
        call.waiting_since = now
        eng.waiting[call_id] = call
        eng.in_flight -= 1
        self.policy_preemptions += 1

    def step_end(self, eng: _Engine, result: StepResult) -> None:
        now = self.now
        eng.last_running, eng.last_waiting = result.num_running, result.num_waiting
        for out in result.outputs:
            call = eng.requests.get(out.request_id)
            if call is None:  # stopped during this step (rule 5): its first token is dropped with it
                continue
            if call.first_token < 0:
                call.first_token = now
            if not call.spell_scheduled and out.first_scheduled_time is not None:
                call.spell_scheduled = True  # the spell's first output: the engine's wait for it is known
                call.engine_wait += max(0.0, out.first_scheduled_time - call.spell_start)
                if call.scheduled < 0:
                    call.scheduled = out.first_scheduled_time
            if call.cached < 0:
                call.cached = out.num_cached_tokens
            if out.finished:
                del eng.requests[out.request_id]
                del eng.running[call.call_id]
                self.complete(eng, call)
        eng.busy = False
        if eng.engine.has_unfinished_requests() or (eng.queue is not None and len(eng.queue) > 0):
            self.wake(eng)

    def complete(self, eng: _Engine, call: _Call) -> None:
        now = self.now
        state = eng.engine.request_state(call.rid)
        call.preemptions += state.num_preemptions if state is not None else 0
        call.exec_time += now - call.spell_start
        eng.in_flight -= 1
        eng.dirty = True
        program = call.program
        spec = call.spec
        engine_time = call.exec_time - call.engine_wait  # from the engine's first scheduling on
        measured = engine_time  # what the table is told (rule 6)
        if eng.scheduler is not None:
            measured = call.exec_time
            usage = CallUsage(measured, len(call.prompt), spec.output_tokens, max(call.cached, 0))
            eng.scheduler.leave(call.call_id, now, True, usage)
            self.pump_soon(eng)
        elif eng.queue is not None:
            eng.queue.finish(call.call_id, now)
        self.table.finish_call(
            CallFinish(
                program.spec.program_id,
                call.call_id,
                measured,
                call.queue_wait + call.engine_wait,
                len(call.prompt),
                call.cached,
                spec.output_tokens,
            ),
            now,
        )
        self.calls.append(
            CallRecord(
                program.spec.program_id,
                call.call_id,
                eng.engine_id,
                call.arrival,
                call.admitted,
                call.first_token,
                now,
                engine_time,
                call.queue_wait + call.engine_wait,
                len(call.prompt),
                call.cached,
                spec.output_tokens,
                call.preemptions,
            )
        )
        record = program.record
        record.calls_completed += 1
        record.output_tokens += spec.output_tokens
        program.remaining_output -= spec.output_tokens
        if record.calls_completed == record.num_calls:
            program.prompts.forget()
            record.completion = now
            self.table.end(program.spec.program_id, now)
            return
        for child in program.children[spec.index]:
            program.pending[child] -= 1
            if program.pending[child] == 0:
                self.make_ready(program, program.spec.calls[child])


def simulate(
    programs: Sequence[ProgramSpec],
    system: SystemPreset,
    config: ClusterConfig | None = None,
    *,
    tokens: TokenCache | None = None,
) -> SimulationResult:
    """Run ``programs`` through ``system`` in virtual time; every call of every program completes
    exactly once unless ``config.max_time`` cuts the run short. Pass one ``tokens`` cache to runs that
    replay the same programs, so that only the first one tokenises."""
    cluster = _Cluster(system, config or ClusterConfig(), tokens)
    states = cluster.run(programs)
    engines = tuple(
        EngineRecord(
            e.engine_id,
            (s := e.engine.stats).busy_time,
            s.steps,
            s.num_preemptions,
            s.prefix_cache_queries,
            s.prefix_cache_hits,
            s.prompt_tokens,
            s.generation_tokens,
        )
        for e in cluster.engines
    )
    records = tuple(s.record for s in states)
    calls = tuple(cluster.calls)
    return SimulationResult(
        system=system.name,
        programs=records,
        calls=calls,
        engines=engines,
        summary=summarize(records, calls, engines, horizon=cluster.now),
        end_time=cluster.now,
        events=cluster.events,
        policy_preemptions=cluster.policy_preemptions,
    )
