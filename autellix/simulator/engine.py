"""The simulated engine: a pure state machine that schedules like vLLM V1 (reference.md §4, DESIGN.md §4).

Theory of operation
-------------------
A request is a token sequence (prompt, then the tokens it generates) and ``num_computed``, the
number of its tokens whose KV is in the cache. It needs ``len(tokens) - num_computed`` tokens
computed: the whole prompt at first, then one per decode step. ``step(now)`` is one engine step:

1. Running requests, in order, each get ``min(needed, budget)`` tokens of the step's token budget
   (``max_num_batched_tokens``): a decode takes 1, a prefill continues its chunk (chunked prefill).
   Its KV must cover ``ceil((num_computed + scheduled) / block_size)`` blocks.
2. If the blocks cannot be allocated, preempt by recompute until they can: the victim is the
   policy's (FCFS: the last running; priority: the largest (priority, arrival)); its blocks are
   freed (full ones stay cached), ``num_computed`` drops to 0, its generated tokens stay part of its
   sequence, and it goes back to the waiting queue (FCFS: to the front). A victim already scheduled
   this step gives its tokens back. If the victim is the current request, the walk ends (as vLLM).
3. Only if nothing was preempted, admit waiting requests in policy order while budget remains and
   fewer than ``max_num_seqs`` run: a request first takes its prefix-cache hits (at most
   ``len(tokens) - 1``, whole blocks), then ``min(rest, budget)`` tokens. The first request whose
   blocks cannot be allocated stops admission (no skipping ahead). Waiting never preempts running.
4. The step computes what was scheduled. A request whose computed tokens reach the end of its
   sequence samples one token (its first output in the step where its prefill completes); it
   finishes when it has generated ``output_len`` tokens, and its blocks are freed at once.
5. Full blocks are hashed once, when they fill (the prompt's at submission, generated ones as they
   fill), and registered in the prefix cache as soon as they are scheduled for computation (as
   vLLM does at allocation), so a request admitted later in the same step already shares them, and
   re-admission after preemption or a later turn of the same conversation hits the cache.
6. The step lasts ``profile.step_time_s(shape)`` from ``now``; an empty step lasts 0. A pass that
   only preempted is followed at once by the next one in the same call (vLLM's empty step takes no
   time), so a step with unfinished requests always schedules something. The engine never reads
   a clock: ``now`` is the caller's.
7. Fast path (quiet steps, ``EngineConfig.fast_decode``): decoding requests live in a
   :class:`~autellix.simulator.decode_group.DecodeGroup` and a step costs what changes in it. It
   runs only when it provably makes the per-step walk's decisions (every running request reached
   with budget left, every block allocation of the walk fits); otherwise the group is settled and
   the per-step code above runs the step. Both give the same state, outputs and durations.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from autellix.simulator.decode_group import DecodeGroup, fill_tokens
from autellix.simulator.kvcache import BlockTable, KVCacheManager, hash_token_blocks
from autellix.simulator.request_queue import WaitingQueue, make_waiting_queue
from autellix.simulator.stepmodel import StepProfile, StepShape
from autellix.simulator.tokenizer import NUM_SPECIAL, VOCAB_SIZE, generated_token_stream

__all__ = [
    "EngineConfig",
    "EngineStats",
    "RequestOutput",
    "RequestState",
    "SimEngine",
    "SimRequest",
    "StepResult",
]

_WAITING, _RUNNING, _DONE = 0, 1, 2
_SPAN = VOCAB_SIZE - NUM_SPECIAL
_FINISHED_KEPT = 4096  # finished/aborted requests whose state stays queryable


@dataclass(slots=True)
class EngineConfig:
    num_gpu_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 32768
    enable_prefix_caching: bool = True
    policy: Literal["fcfs", "priority"] = "fcfs"
    seed: int = 0  # seed of the generated token ids (tokenizer.generated_token_id)
    fast_decode: bool = True  # rule 7 (False: every step by the per-step walk, the reference)


@dataclass(slots=True)
class SimRequest:
    """What the caller submits."""

    request_id: str
    prompt_token_ids: list[int]
    output_len: int  # tokens this request generates (the caller applied ignore_eos / max_tokens)
    arrival_time: float
    priority: int = 0  # priority policy only; lower first, ties by arrival then submission order
    token_key: int | str | None = None  # key of its generated ids (default: request_id)
    # kvcache.hash_token_blocks of the prompt's leading full blocks, when the caller has them (a
    # simulation that hashed the shared history of a program's earlier call); the rest is hashed here.
    prefix_hashes: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """One request's progress in one step (only requests that emitted a token are reported)."""

    request_id: str
    new_tokens: int  # tokens emitted this step: 1 (a decode, or the step a prefill completes)
    num_generated: int  # total generated so far
    finished: bool
    finish_reason: str | None  # "length" once output_len is reached
    num_cached_tokens: int  # prefix-cache hit tokens at first admission
    first_scheduled_time: float | None  # start of the step that first scheduled it


@dataclass(frozen=True, slots=True)
class StepResult:
    start: float  # the step's start (the ``now`` given)
    duration: float  # seconds (the profile's time unit); 0 if nothing was scheduled
    outputs: tuple[RequestOutput, ...]
    preempted: tuple[str, ...]  # request ids preempted in this step
    num_scheduled_tokens: int
    num_running: int  # after the step
    num_waiting: int  # after the step


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1
    prefix_cache_queries: int  # tokens looked up at first admissions, cumulative
    prefix_cache_hits: int  # tokens hit at first admissions, cumulative
    num_preemptions: int
    prompt_tokens: int  # prefill tokens computed (recomputation included), cumulative
    generation_tokens: int
    num_gpu_blocks: int
    steps: int  # non-empty steps
    busy_time: float  # seconds of steps, cumulative
    num_free_blocks: int = 0
    preempted_prefix_cache_queries: int = 0  # the same at re-admissions after preemption
    preempted_prefix_cache_hits: int = 0
    num_finished: int = 0
    num_aborted: int = 0


@dataclass(frozen=True, slots=True)
class RequestState:
    request_id: str
    status: Literal["waiting", "running", "finished", "aborted"]
    num_computed_tokens: int
    num_generated: int
    num_cached_tokens: int  # 0 until first admitted
    num_preemptions: int
    num_prompt_tokens: int
    output_len: int


@dataclass(slots=True, eq=False)
class _Request:
    """Internal state of one unfinished request (identity equality: the queues use ``is``/``==``)."""

    request_id: str
    tokens: list[int]  # prompt + generated
    prompt_len: int
    output_len: int
    order_key: tuple[int, float, int]  # (priority, arrival, submit order)
    stream: int  # base of its generated token ids
    block_hashes: list[int]  # hash chain of the full blocks of ``tokens``
    table: BlockTable = field(default_factory=BlockTable)
    num_computed: int = 0
    num_generated: int = 0
    prefill_end: int = 0  # len(tokens) at the last admission: tokens below are prefill
    num_cached_tokens: int = -1
    first_scheduled_time: float | None = None
    num_preemptions: int = 0
    status: int = _WAITING
    seq: int = 0  # admission order of its current running spell (the running list is in this order)
    # Decode group (decode_group.py): membership, state at joining, next event clocks.
    in_group: bool = False
    clock0: int = 0
    computed0: int = 0
    generated0: int = 0
    next_finish: int = 0


class SimEngine:
    """vLLM-V1-like scheduler + step-time model; ``step(now)`` advances one engine step."""

    def __init__(self, config: EngineConfig, profile: StepProfile) -> None:
        if (
            min(config.num_gpu_blocks, config.block_size, config.max_num_seqs, config.max_num_batched_tokens)
            < 1
        ):
            raise ValueError(
                "num_gpu_blocks, block_size, max_num_seqs and max_num_batched_tokens must be >= 1"
            )
        self.config = config
        self.profile = profile
        self._kv = KVCacheManager(config.num_gpu_blocks, config.block_size, config.enable_prefix_caching)
        self._waiting: WaitingQueue[_Request] = make_waiting_queue(config.policy)
        self._running: list[_Request] = []
        self._requests: dict[str, _Request] = {}  # unfinished ones
        self._done: OrderedDict[str, RequestState] = OrderedDict()  # recently finished or aborted
        self._submitted = 0
        self._preemptions = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._steps = 0
        self._busy_time = 0.0
        self._preempted_queries = 0
        self._preempted_hits = 0
        self._finished = 0
        self._aborted = 0
        self._admitted = 0  # admissions so far: the next running spell's seq
        self._fast = config.fast_decode and config.block_size > 1  # (one-token blocks: per step)
        self._group: DecodeGroup[_Request] = DecodeGroup(config.block_size, config.enable_prefix_caching)
        self._formed = False  # the group holds the running decoders (rule 7)
        self._others: list[_Request] = []  # running requests outside the group, in running order

    # -- requests ---------------------------------------------------------------------------------

    def add_request(self, request: SimRequest) -> None:
        """Queue a request; ValueError if it is malformed, too long, or its id is in flight."""
        cfg = self.config
        rid = request.request_id
        prompt_len = len(request.prompt_token_ids)
        if rid in self._requests:
            raise ValueError(f"request id {rid!r} is already in flight")
        if prompt_len == 0:
            raise ValueError("the prompt is empty")
        if request.output_len < 1:
            raise ValueError(f"output_len must be >= 1, got {request.output_len}")
        total = prompt_len + request.output_len
        if total > cfg.max_model_len:
            raise ValueError(
                f"prompt ({prompt_len}) + output ({request.output_len}) tokens exceed max_model_len "
                f"{cfg.max_model_len}"
            )
        if -(-(total - 1) // cfg.block_size) > cfg.num_gpu_blocks:
            raise ValueError(
                f"request needs {total - 1} KV tokens, more than the whole cache "
                f"({cfg.num_gpu_blocks * cfg.block_size})"
            )
        if request.priority != 0 and cfg.policy != "priority":
            raise ValueError(f"Got priority {request.priority} but priority scheduling is not enabled.")
        if len(request.prefix_hashes) > prompt_len // cfg.block_size:
            raise ValueError("prefix_hashes names more blocks than the prompt has")
        tokens = list(request.prompt_token_ids)
        hashes = (
            hash_token_blocks(tokens, cfg.block_size, list(request.prefix_hashes))
            if cfg.enable_prefix_caching
            else []
        )
        key = request.token_key if request.token_key is not None else rid
        req = _Request(
            request_id=rid,
            tokens=tokens,
            prompt_len=prompt_len,
            output_len=request.output_len,
            order_key=(request.priority, request.arrival_time, self._submitted),
            stream=generated_token_stream(cfg.seed, key),
            block_hashes=hashes,
        )
        self._submitted += 1
        self._requests[rid] = req
        self._done.pop(rid, None)
        self._waiting.add(req)

    def abort_request(self, request_id: str) -> bool:
        """Drop an unfinished request at any stage, freeing its blocks; True if it was unfinished."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        if req.status == _WAITING:
            self._waiting.remove(req)
        else:
            if req.in_group:
                self._group.leave(req, fill=False)
            elif self._formed:
                self._others.remove(req)
            self._running.remove(req)
        self._kv.free(req.table)
        self._aborted += 1
        self._retire(req, "aborted")
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def request_state(self, request_id: str) -> RequestState | None:
        req = self._requests.get(request_id)
        if req is None:
            return self._done.get(request_id)
        if req.in_group:
            computed, generated = self._group.counters(req)
            return self._snapshot(req, "running", computed, generated)
        return self._snapshot(req, "waiting" if req.status == _WAITING else "running")

    # -- the step ---------------------------------------------------------------------------------

    def step(self, now: float, *, quiet: bool = False) -> StepResult:
        """Schedule and run one engine step starting at ``now`` (rules 1-6).

        ``quiet`` reports only first tokens and finishes (for simulations that need no per-token
        events); the engine's state advances exactly as without it. Quiet steps take the fast path
        when they can (rule 7).
        """
        if quiet and self._fast:
            result = self._group_step(now)
            if result is not None:
                return result
        self._dissolve()
        preempted: list[_Request] = []
        while True:
            before = len(preempted)
            scheduled: list[_Request] = []
            counts: list[int] = []
            budget = self._schedule_running(scheduled, counts, preempted)
            if len(preempted) == before:
                self._admit(now, budget, scheduled, counts)
                break
            if scheduled:
                break
            # A pass that preempted everything it walked (priority policy, the worst request first):
            # vLLM runs an empty step and schedules again at once; that step takes no time.
        if not scheduled:
            return StepResult(
                now,
                0.0,
                (),
                tuple(r.request_id for r in preempted),
                0,
                len(self._running),
                len(self._waiting),
            )
        return self._execute(now, scheduled, counts, preempted, quiet)

    def _schedule_running(
        self, scheduled: list[_Request], counts: list[int], preempted: list[_Request]
    ) -> int:
        """Rules 1-2: give running requests their tokens; the budget left. This loop is the common
        case (the blocks fit); the first failed allocation hands over to the preempting loop."""
        kv = self._kv
        bs = self.config.block_size
        budget = self.config.max_num_batched_tokens
        caching = self.config.enable_prefix_caching
        for i, req in enumerate(self._running):
            if budget <= 0:
                break
            computed = req.num_computed
            n = len(req.tokens) - computed
            if n > budget:
                n = budget
            total = computed + n
            table = req.table
            if total > len(table.blocks) * bs and not kv.allocate_slots(table, total):
                return self._schedule_preempting(i, budget, scheduled, counts, preempted)
            if caching and total // bs > table.num_cached:
                kv.cache_full_blocks(table, req.block_hashes, total)
            scheduled.append(req)
            counts.append(n)
            budget -= n
        return budget

    def _schedule_preempting(
        self, i: int, budget: int, scheduled: list[_Request], counts: list[int], preempted: list[_Request]
    ) -> int:
        """Rules 1-2 from running request ``i`` on, preempting whenever blocks run out."""
        kv = self._kv
        bs = self.config.block_size
        caching = self.config.enable_prefix_caching
        running = self._running
        waiting = self._waiting
        while i < len(running) and budget > 0:
            req = running[i]
            n = len(req.tokens) - req.num_computed
            if n > budget:
                n = budget
            total = req.num_computed + n
            if total > len(req.table.blocks) * bs:
                while not kv.allocate_slots(req.table, total):
                    v = waiting.victim_index(running)
                    victim = running.pop(v)
                    if v < i:  # priority policy: the victim was scheduled earlier in this step
                        j = scheduled.index(victim)
                        del scheduled[j]
                        budget += counts.pop(j)
                        i -= 1
                    self._preempt(victim)
                    preempted.append(victim)
                    if victim is req:
                        break
                if req.status != _RUNNING:
                    break
            if caching and total // bs > req.table.num_cached:
                kv.cache_full_blocks(req.table, req.block_hashes, total)
            scheduled.append(req)
            counts.append(n)
            budget -= n
            i += 1
        return budget

    def _admit(self, now: float, budget: int, scheduled: list[_Request], counts: list[int]) -> None:
        kv = self._kv
        bs = self.config.block_size
        max_seqs = self.config.max_num_seqs
        running = self._running
        waiting = self._waiting
        while budget > 0 and len(waiting) and len(running) < max_seqs:
            req = waiting.peek()
            num_tokens = len(req.tokens)
            hits = kv.get_computed_blocks(req.block_hashes, num_tokens)
            computed = len(hits) * bs
            n = num_tokens - computed
            if n > budget:
                n = budget
            if not kv.allocate_slots(req.table, computed + n, hits):
                break
            kv.cache_full_blocks(req.table, req.block_hashes, computed + n)
            waiting.pop()
            running.append(req)
            req.status = _RUNNING
            req.seq = self._admitted
            self._admitted += 1
            req.num_computed = computed
            req.prefill_end = num_tokens
            if req.num_preemptions == 0:
                kv.record_prefix_query(num_tokens, computed)
            else:
                self._preempted_queries += num_tokens
                self._preempted_hits += computed
            if req.num_cached_tokens < 0:
                req.num_cached_tokens = computed
            if req.first_scheduled_time is None:
                req.first_scheduled_time = now
            scheduled.append(req)
            counts.append(n)
            budget -= n

    def _execute(
        self, now: float, scheduled: list[_Request], counts: list[int], preempted: list[_Request], quiet: bool
    ) -> StepResult:
        bs = self.config.block_size
        caching = self.config.enable_prefix_caching
        outputs: list[RequestOutput] = []
        num_tokens = 0
        decode_ctx = 0
        prefill_attn = 0.0
        prompt_tokens = 0
        finished = 0
        generated = 0
        for req, n in zip(scheduled, counts, strict=True):
            c = req.num_computed
            if n == 1:
                decode_ctx += c + 1
            else:
                prefill_attn += n * (c + n * 0.5)
            num_tokens += n
            if c < req.prefill_end:
                prompt_tokens += n
            c += n
            req.num_computed = c
            tokens = req.tokens
            if c != len(tokens):
                continue  # a prefill chunk that does not reach the end samples nothing
            g = req.num_generated + 1
            req.num_generated = g
            generated += 1
            tokens.append(NUM_SPECIAL + hash((req.stream, g - 1)) % _SPAN)  # = tokenizer.stream_token_id
            if caching and len(tokens) % bs == 0:
                hashes = req.block_hashes
                hashes.append(hash((hashes[-1] if hashes else 0, tuple(tokens[-bs:]))))
            if g == req.output_len:
                finished += 1
                self._finish(req, outputs)
            elif g == 1 or not quiet:
                outputs.append(
                    RequestOutput(
                        req.request_id, 1, g, False, None, req.num_cached_tokens, req.first_scheduled_time
                    )
                )
        if finished:
            self._running = [r for r in self._running if r.status == _RUNNING]
            self._finished += finished
        duration = self.profile.step_time_s(StepShape(num_tokens, len(scheduled), decode_ctx, prefill_attn))
        self._steps += 1
        self._busy_time += duration
        self._prompt_tokens += prompt_tokens
        self._generation_tokens += generated
        return StepResult(
            start=now,
            duration=duration,
            outputs=tuple(outputs),
            preempted=tuple(r.request_id for r in preempted),
            num_scheduled_tokens=num_tokens,
            num_running=len(self._running),
            num_waiting=len(self._waiting),
        )

    # -- the fast path (rule 7, decode_group.py) --------------------------------------------------

    def _form(self) -> None:
        """Put the running decoders into the group; the rest stay others (in running order)."""
        group = self._group
        others = self._others
        for req in self._running:
            if (
                len(req.tokens) - req.num_computed == 1
                and req.num_computed >= req.prefill_end
                and group.can_join(req)
            ):
                group.join(req)
            else:
                others.append(req)
        self._formed = True

    def _dissolve(self) -> None:
        """Settle every member so the per-step code sees explicit state (rule 7's fallback)."""
        if not self._formed:
            return
        group = self._group
        for req in self._running:
            if req.in_group:
                group.settle(req)
                req.in_group = False
        group.reset()
        self._others = []
        self._formed = False

    def _group_step(self, now: float) -> StepResult | None:
        """One quiet step by the group, or None (nothing changed) when the per-step walk could decide
        otherwise: a running request it would not reach with budget left, or an allocation that could
        fail (and preempt)."""
        if not self._formed:
            self._form()
        group = self._group
        others = self._others
        kv = self._kv
        bs = self.config.block_size
        caching = self.config.enable_prefix_caching
        g = group.clock
        # 1. The walk's budget, decided without touching anything: members take 1 token each.
        budget = self.config.max_num_batched_tokens
        counts: list[int] = []
        before = 0
        need = 0
        for req in others:
            k = group.members_before(req.seq)
            if k - before >= budget:
                return None
            budget -= k - before
            before = k
            n = len(req.tokens) - req.num_computed
            if n > budget:
                n = budget
            counts.append(n)
            budget -= n
            total = req.num_computed + n
            have = len(req.table.blocks)
            if total > have * bs:
                need += -(-total // bs) - have
        rest = group.size - before
        if rest > budget:
            return None
        budget -= rest
        allocating = group.allocating()
        if need + len(allocating) > kv.num_free_blocks:  # a tight member needs one block
            return None
        registering = group.registering()
        if not registering:
            due = allocating
        elif not allocating:
            due = registering
        else:
            due = sorted(allocating + registering, key=_seq_of)
        # 2. The walk itself, in running order: others and the members with a block event.
        scheduled: list[_Request] = []
        i = 0
        ndue = len(due)
        for req, n in zip(others, counts, strict=True):
            while i < ndue and due[i].seq < req.seq:
                self._member_blocks(due[i], g)
                i += 1
            total = req.num_computed + n
            table = req.table
            if total > len(table.blocks) * bs:
                kv.allocate_slots(table, total)
            if caching and total // bs > table.num_cached:
                kv.cache_full_blocks(table, req.block_hashes, total)
            scheduled.append(req)
        while i < ndue:
            self._member_blocks(due[i], g)
            i += 1
        # 3. Admission, as the per-step path (no preemption happened).
        self._admit(now, budget, scheduled, counts)
        if not scheduled and not group.size:
            group.advance()
            return StepResult(now, 0.0, (), (), 0, len(self._running), len(self._waiting))
        # 4. Execute: members implicitly; others, admitted and finishing members in running order.
        finishing = group.finishing()
        outputs: list[RequestOutput] = []
        num_tokens = group.size
        num_seqs = group.size + len(scheduled)
        decode_ctx = group.decode_context()
        generated = group.size
        prefill_attn = 0.0
        prompt_tokens = 0
        finished = 0
        joiners: list[_Request] = []
        kept: list[_Request] = []
        i = 0
        nfin = len(finishing)
        for req, n in zip(scheduled, counts, strict=True):
            while i < nfin and finishing[i].seq < req.seq:
                self._member_finish(finishing[i], outputs)
                i += 1
            c = req.num_computed
            if n == 1:
                decode_ctx += c + 1
            else:
                prefill_attn += n * (c + n * 0.5)
            num_tokens += n
            if c < req.prefill_end:
                prompt_tokens += n
            c += n
            req.num_computed = c
            tokens = req.tokens
            if c != len(tokens):
                kept.append(req)
                continue
            gen = req.num_generated + 1
            req.num_generated = gen
            generated += 1
            tokens.append(NUM_SPECIAL + hash((req.stream, gen - 1)) % _SPAN)  # = tokenizer.stream_token_id
            if caching and len(tokens) % bs == 0:
                hashes = req.block_hashes
                hashes.append(hash((hashes[-1] if hashes else 0, tuple(tokens[-bs:]))))
            if gen == req.output_len:
                finished += 1
                self._finish(req, outputs)
                continue
            if gen == 1:
                outputs.append(
                    RequestOutput(
                        req.request_id, 1, gen, False, None, req.num_cached_tokens,
                        req.first_scheduled_time,
                    )
                )  # fmt: skip
            joiners.append(req)  # it computed its whole sequence: a decoder from the next step on
        while i < nfin:
            self._member_finish(finishing[i], outputs)
            i += 1
        finished += nfin
        group.advance()
        for req in joiners:
            if group.can_join(req):
                group.join(req)
            else:
                kept.append(req)
        if len(kept) > 1 and joiners:
            kept.sort(key=_seq_of)
        self._others = kept
        if finished:
            self._running = [r for r in self._running if r.status == _RUNNING]
            self._finished += finished
        duration = self.profile.step_time_s(StepShape(num_tokens, num_seqs, decode_ctx, prefill_attn))
        self._steps += 1
        self._busy_time += duration
        self._prompt_tokens += prompt_tokens
        self._generation_tokens += generated
        return StepResult(
            start=now,
            duration=duration,
            outputs=tuple(outputs),
            preempted=(),
            num_scheduled_tokens=num_tokens,
            num_running=len(self._running),
            num_waiting=len(self._waiting),
        )

    def _member_blocks(self, req: _Request, g: int) -> None:
        """A member's block event in group step ``g`` (decode_group.py rule 3): a fresh block when its
        computed tokens fill its blocks, else the registration of the block this step fills."""
        bs = self.config.block_size
        total = req.computed0 + g - req.clock0 + 1
        if total % bs == 1 or bs == 1:
            self._kv.append_block(req.table)
        else:
            fill_tokens(req, total, bs, True)
            self._kv.cache_full_blocks(req.table, req.block_hashes, total)

    def _member_finish(self, req: _Request, outputs: list[RequestOutput]) -> None:
        """A member generates its last token in this step: it leaves the group and the engine."""
        self._group.leave(req, fill=False)
        req.num_computed += 1
        req.num_generated += 1
        self._finish(req, outputs)

    def _finish(self, req: _Request, outputs: list[RequestOutput]) -> None:
        """``req`` generated its last token: free its blocks, retire it and report its final output."""
        self._kv.free(req.table)
        req.status = _DONE
        del self._requests[req.request_id]
        self._retire(req, "finished")
        outputs.append(
            RequestOutput(
                req.request_id, 1, req.num_generated, True, "length", req.num_cached_tokens,
                req.first_scheduled_time,
            )
        )  # fmt: skip

    def _preempt(self, req: _Request) -> None:
        self._kv.free(req.table)
        req.num_computed = 0
        req.status = _WAITING
        req.num_preemptions += 1
        self._preemptions += 1
        self._waiting.prepend(req)

    # -- observation ------------------------------------------------------------------------------

    def _snapshot(
        self,
        req: _Request,
        status: Literal["waiting", "running", "finished", "aborted"],
        computed: int | None = None,
        generated: int | None = None,
    ) -> RequestState:
        return RequestState(
            request_id=req.request_id,
            status=status,
            num_computed_tokens=req.num_computed if computed is None else computed,
            num_generated=req.num_generated if generated is None else generated,
            num_cached_tokens=max(req.num_cached_tokens, 0),
            num_preemptions=req.num_preemptions,
            num_prompt_tokens=req.prompt_len,
            output_len=req.output_len,
        )

    def _retire(self, req: _Request, status: Literal["finished", "aborted"]) -> None:
        done = self._done
        done[req.request_id] = self._snapshot(req, status)
        if len(done) > _FINISHED_KEPT:
            done.popitem(last=False)

    @property
    def stats(self) -> EngineStats:
        kv = self._kv
        return EngineStats(
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_cache_usage=kv.usage,
            prefix_cache_queries=kv.prefix_queries,
            prefix_cache_hits=kv.prefix_hits,
            num_preemptions=self._preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
            num_gpu_blocks=kv.num_blocks,
            steps=self._steps,
            busy_time=self._busy_time,
            num_free_blocks=kv.num_free_blocks,
            preempted_prefix_cache_queries=self._preempted_queries,
            preempted_prefix_cache_hits=self._preempted_hits,
            num_finished=self._finished,
            num_aborted=self._aborted,
        )

    @property
    def kv_cache(self) -> KVCacheManager:
        """The block pool (read it; do not mutate it behind the engine's back)."""
        return self._kv

    def running_ids(self) -> list[str]:
        return [r.request_id for r in self._running]

    def waiting_ids(self) -> list[str]:
        return [r.request_id for r in self._waiting]


def _seq_of(req: _Request) -> int:
    return req.seq
