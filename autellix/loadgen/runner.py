"""The live load generator: programs as real concurrent clients of an OpenAI-compatible URL.

The IO twin of the discrete-event simulation (simulator/cluster.py): the same :class:`ProgramSpec` s run
as real HTTP traffic against the proxy, a sidecar, a bare engine or any OpenAI-compatible server, and
the same records (autellix/records.py) are filled, so live and simulated figures mean the same thing.

Theory of operation
-------------------
1. Clock. ``time_scale`` is wall seconds per simulated second, as the simulated engine's
   ``--time-scale``: a program arriving at simulated ``t`` is started at wall ``t0 + (t - t_first) *
   time_scale``, tool delays are slept ``delay * time_scale``, and every measured time is divided by
   ``time_scale``, so records and summaries are in simulated seconds. Against real engines keep 1.0.
2. Open loop. Program ``i`` arrives at its scheduled time whatever the server does; its response time
   counts from the *scheduled* arrival, so a load generator that falls behind shows up as latency (and
   as ``arrival_lag``, reported apart) instead of silently lowering the load.
3. A program is one asyncio task. Its roots are issued at arrival (+ their ``tool_delay``); any other
   call when the last of its parents has finished (+ its ``tool_delay``) -- :class:`ProgramProgress`
   keeps that bookkeeping, pure. Parallel threads of a DAG are concurrent requests. Every request
   carries ``X-Program-Id`` (the program id plus ``program_id_suffix``) and ``X-Thread-Id``; with
   ``agentic_context`` its body also carries the identity the way vllm-router's program scheduling
   reads it: ``vllm_xargs.agentic_context`` holding ``program_id`` (the same id), ``step_id`` (the
   call's issue order) and ``expected_resume`` (false on the program's last call to be issued, so the
   router can release the program when that call ends), as a JSON string, since vLLM types the values
   of ``vllm_xargs`` as scalars and the router decodes a string.
4. A call is a streamed generation in the API of ``api`` (wire.py: chat, Responses or Messages) that
   generates exactly ``output_tokens`` (``ignore_eos`` with the API's limit field).
   Measured: issue, first content chunk (TTFT), last chunk (end to end), the gaps between chunks
   (inter-token latency), and ``usage`` (prompt, cached and completion tokens; without usage the
   output is the number of content chunks). The client cannot see the sidecar's split of a call's
   time, so its records hold the client's view: queue wait = TTFT (queueing + prefill), execution =
   first token to last (decode). Program-level figures, the paper's metric, need no such split.
5. Errors are counted by kind: ``http_<status>``, ``connection`` (refused, reset before a reply),
   ``timeout`` (no byte for ``read_timeout``), ``stream`` (an SSE error event or a broken stream after
   the first byte). A failed call ends its program: no further calls are issued, calls in flight
   finish, and the program counts as incomplete.
6. Deadline. ``duration`` wall seconds after the start, everything still running is cancelled:
   calls in flight count as ``cancelled``, programs that had arrived as incomplete, programs not yet
   arrived as ``not_started``. The run therefore always ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from autellix.loadgen import wire
from autellix.loadgen.program import CallSpec, ProgramSpec, call_messages
from autellix.records import CallRecord, Distribution, MetricsSummary, ProgramRecord, summarize

__all__ = [
    "CallError",
    "LiveOptions",
    "LiveRunResult",
    "ProgramProgress",
    "discover_model",
    "run_live",
    "run_programs",
    "summarize_by_workload",
]


class ProgramProgress:
    """Which calls of a program may be issued, given the ones that finished (rule 3). Pure."""

    def __init__(self, program: ProgramSpec) -> None:
        self._children = program.children()
        self._pending = [len(call.parents) for call in program.calls]
        self._finished: set[int] = set()
        self._total = program.num_calls

    def roots(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self._pending) if n == 0)

    def finish(self, index: int) -> tuple[int, ...]:
        """Mark call ``index`` finished; the calls that became ready because of it."""
        if index in self._finished:
            raise ValueError(f"call {index} finished twice")
        self._finished.add(index)
        ready = []
        for child in self._children[index]:
            self._pending[child] -= 1
            if self._pending[child] == 0:
                ready.append(child)
        return tuple(ready)

    @property
    def done(self) -> bool:
        return len(self._finished) == self._total


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How to drive the server (times in wall seconds unless named otherwise)."""

    url: str  # base URL; requests go to {url}/v1/chat/completions (or the path of ``api``)
    model: str | None = None  # None: the first model of GET {url}/v1/models
    time_scale: float = 1.0  # wall seconds per simulated second (rule 1)
    duration: float | None = None  # hard deadline after the start (rule 6); None: none
    connect_timeout: float = 5.0
    read_timeout: float = 600.0  # longest silence within one call
    max_connections: int = 1024
    program_headers: bool = True  # send X-Program-Id / X-Thread-Id (off: every call is anonymous)
    program_id_suffix: str = ""  # appended to program ids in headers (keeps runs apart in a table)
    end_programs: bool = False  # DELETE {url}/v1/programs/{id} when a program ends (autellix proxy)
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body
    agentic_context: bool = False  # also send vllm_xargs.agentic_context in the body (rule 3)
    api: wire.Api = "chat"  # rule 4
    progress: bool = False  # a tqdm bar on stderr

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError("time_scale must be a finite number > 0")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration must be > 0")


@dataclass(frozen=True, slots=True)
class CallError:
    """A call that failed (times in simulated seconds from the run's first arrival)."""

    program_id: str
    call_index: int
    kind: str  # http_<status>, connection, timeout, stream
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class LiveRunResult:
    """Everything one live run measured (simulated seconds, see rule 1)."""

    model: str
    programs: tuple[ProgramRecord, ...]  # the programs that arrived before the deadline
    calls: tuple[CallRecord, ...]  # completed calls
    errors: tuple[CallError, ...]
    summary: MetricsSummary
    by_workload: dict[str, MetricsSummary]
    call_itl: Distribution  # mean inter-token gap per call
    token_gap: float  # mean gap between consecutive tokens over all tokens (token-weighted ITL)
    arrival_lag: Distribution  # wall seconds the generator started programs late
    programs_not_started: int
    calls_cancelled: int
    wall_seconds: float
    time_scale: float

    @property
    def errors_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for error in self.errors:
            counts[error.kind] = counts.get(error.kind, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self, with_records: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "time_scale": self.time_scale,
            "wall_seconds": self.wall_seconds,
            "summary": self.summary.to_dict(),
            "by_workload": {k: v.to_dict() for k, v in self.by_workload.items()},
            "call_itl": _plain(self.call_itl),
            "token_gap": self.token_gap,
            "arrival_lag": _plain(self.arrival_lag),
            "programs_not_started": self.programs_not_started,
            "calls_cancelled": self.calls_cancelled,
            "errors_by_kind": self.errors_by_kind,
            "errors": [_plain(e) for e in self.errors[:100]],
        }
        if with_records:
            out["programs"] = [_plain(p) for p in self.programs]
            out["calls"] = [_plain(c) for c in self.calls]
        return out


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def summarize_by_workload(
    programs: Sequence[ProgramRecord], calls: Sequence[CallRecord]
) -> dict[str, MetricsSummary]:
    """One summary per workload kind (``ProgramRecord.workload``), over that kind's programs and calls."""
    kind_of = {p.program_id: p.workload for p in programs}
    out: dict[str, MetricsSummary] = {}
    for kind in sorted(set(kind_of.values())):
        mine = [p for p in programs if p.workload == kind]
        out[kind] = summarize(mine, [c for c in calls if kind_of.get(c.program_id) == kind])
    return out


async def discover_model(session: aiohttp.ClientSession, url: str) -> str:
    """The first model that ``GET {url}/v1/models`` lists."""
    async with session.get(url + "/v1/models") as reply:
        if reply.status != 200:
            raise RuntimeError(f"GET {url}/v1/models answered {reply.status}")
        data = await reply.json()
    models = data.get("data") if isinstance(data, dict) else None
    if not models:
        raise RuntimeError(f"{url}/v1/models lists no model")
    return str(models[0]["id"])


class _CallFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Run:
    """The state of one run; methods are the program and call coroutines (rules 3-6)."""

    def __init__(self, options: LiveOptions, session: aiohttp.ClientSession, model: str, first: float):
        self.options = options
        self.session = session
        self.model = model
        self.first = first  # simulated time of the first arrival
        self.t0 = time.monotonic()
        self.endpoint = options.url + wire.PATHS[options.api]
        self.programs: list[ProgramRecord] = []
        self.calls: list[CallRecord] = []
        self.itl: list[float] = []
        self.gap_time = 0.0
        self.gap_count = 0
        self.errors: list[CallError] = []
        self.lags: list[float] = []
        self.cancelled = 0
        self.bar: Any = None
        self.issued: dict[str, int] = {}  # calls issued so far, by program id

    def sim_now(self) -> float:
        return self.first + (time.monotonic() - self.t0) / self.options.time_scale

    async def sleep_until(self, sim_time: float) -> None:
        delay = self.t0 + (sim_time - self.first) * self.options.time_scale - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def program(self, spec: ProgramSpec) -> None:
        await self.sleep_until(spec.arrival_time)
        lag = (self.sim_now() - spec.arrival_time) * self.options.time_scale
        self.lags.append(max(lag, 0.0))
        record = ProgramRecord(spec.program_id, spec.workload, spec.kind, spec.arrival_time, spec.num_calls)
        self.programs.append(record)
        progress = ProgramProgress(spec)
        running: set[asyncio.Task[CallRecord | None]] = set()
        index_of: dict[asyncio.Task[CallRecord | None], int] = {}
        failed = False
        last_completion = spec.arrival_time

        def launch(index: int) -> None:
            task = asyncio.create_task(self.call(spec, spec.calls[index]))
            running.add(task)
            index_of[task] = index

        for index in progress.roots():
            launch(index)
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.discard(task)
                    call = task.result()
                    if call is None:
                        failed = True
                        continue
                    record.calls_completed += 1
                    record.output_tokens += call.output_tokens
                    last_completion = max(last_completion, call.completion)
                    ready = progress.finish(index_of.pop(task))
                    if not failed:
                        for child in ready:
                            launch(child)
            if progress.done:
                record.completion = last_completion
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(calls=len(self.calls), errors=len(self.errors), refresh=False)
        if self.options.end_programs:
            await self.end_program(spec.program_id)

    async def end_program(self, program_id: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            url = f"{self.options.url}/v1/programs/{program_id}{self.options.program_id_suffix}"
            async with self.session.delete(url) as reply:
                await reply.read()

    async def call(self, spec: ProgramSpec, call: CallSpec) -> CallRecord | None:
        """One call; its record, or None if it failed (recorded in ``errors``)."""
        if call.tool_delay > 0:
            await asyncio.sleep(call.tool_delay * self.options.time_scale)
        headers = {"Content-Type": "application/json"}
        if self.options.program_headers:
            headers["X-Program-Id"] = spec.program_id + self.options.program_id_suffix
            headers["X-Thread-Id"] = str(call.thread)
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        body = {
            **wire.body(self.options.api, self.model, call_messages(spec, call), call.output_tokens),
            **self.options.extra_body,
        }
        step = self.issued[spec.program_id] = self.issued.get(spec.program_id, 0) + 1
        if self.options.agentic_context:
            context = {
                "program_id": spec.program_id + self.options.program_id_suffix,
                "step_id": step,
                "expected_resume": step < spec.num_calls,
            }
            body["vllm_xargs"] = {**body.get("vllm_xargs", {}), "agentic_context": json.dumps(context)}
        issued = self.sim_now()
        try:
            return await self.stream(spec, call, json.dumps(body), headers, issued)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except _CallFailed as exc:
            self.errors.append(CallError(spec.program_id, call.index, exc.kind, str(exc), self.sim_now()))
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            self.errors.append(
                CallError(spec.program_id, call.index, "timeout", str(exc) or "timeout", self.sim_now())
            )
        except (aiohttp.ClientError, OSError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.errors.append(CallError(spec.program_id, call.index, "connection", message, self.sim_now()))
        return None

    async def stream(
        self, spec: ProgramSpec, call: CallSpec, body: str, headers: dict[str, str], issued: float
    ) -> CallRecord:
        first: float | None = None
        last = issued
        chunks = 0
        done = False
        completion = issued
        usage: wire.Usage | None = None
        api = self.options.api
        async with self.session.post(self.endpoint, data=body, headers=headers) as reply:
            if reply.status != 200:
                text = (await reply.read())[:300].decode(errors="replace")
                raise _CallFailed(f"http_{reply.status}", text)
            try:
                async for raw in reply.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators and SSE comments
                    event = wire.read(api, line[5:].strip())
                    if event.error is not None:
                        raise _CallFailed("stream", event.error)
                    if event.usage is not None:
                        usage = event.usage
                    if event.text:
                        last = self.sim_now()
                        if first is None:
                            first = last
                        chunks += 1
                    if event.end:
                        done = True  # read on to the end: closing early resets the server's last write
                        completion = self.sim_now()
                if not done:
                    raise _CallFailed("stream", "the stream ended without its last event")
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ValueError) as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise
                raise _CallFailed("stream", f"{type(exc).__name__}: {exc}") from exc
        first = completion if first is None else first
        prompt_tokens = usage.prompt_tokens if usage else 0
        output = usage.output_tokens if usage else chunks
        if chunks > 1:
            self.itl.append((last - first) / (chunks - 1))
            self.gap_time += last - first
            self.gap_count += chunks - 1
        record = CallRecord(
            program_id=spec.program_id,
            call_id=f"{spec.program_id}/{call.index}",
            engine_id="",  # the client cannot tell which engine served it
            arrival=issued,
            admitted=issued,
            first_token=first,
            completion=completion,
            exec_time=completion - first,
            queue_wait=first - issued,
            prompt_tokens=prompt_tokens,
            cached_tokens=usage.cached_tokens if usage else 0,
            output_tokens=output,
        )
        self.calls.append(record)
        return record


async def run_programs(programs: Sequence[ProgramSpec], options: LiveOptions) -> LiveRunResult:
    """Run ``programs`` against ``options.url`` (rules 1-6); returns when all ended or the deadline hit."""
    ordered = sorted(programs, key=lambda p: p.arrival_time)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=options.connect_timeout, sock_read=options.read_timeout
    )
    connector = aiohttp.TCPConnector(limit=options.max_connections)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        model = options.model or await discover_model(session, options.url)
        run = _Run(options, session, model, ordered[0].arrival_time if ordered else 0.0)
        tasks = [asyncio.create_task(run.program(p), name=p.program_id) for p in ordered]
        bar_context: Any = contextlib.nullcontext()
        if options.progress:
            from tqdm import tqdm  # type: ignore[import-untyped]

            bar_context = tqdm(total=len(tasks), unit="program", desc="programs", mininterval=0.5)
        with bar_context as bar:
            run.bar = bar
            if tasks:
                await asyncio.wait(tasks, timeout=options.duration)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
    wall = time.monotonic() - run.t0
    arrived = tuple(run.programs)
    calls = tuple(run.calls)
    return LiveRunResult(
        model=model,
        programs=arrived,
        calls=calls,
        errors=tuple(run.errors),
        summary=summarize(arrived, calls),
        by_workload=summarize_by_workload(arrived, calls),
        call_itl=Distribution.of(run.itl),
        token_gap=run.gap_time / run.gap_count if run.gap_count else 0.0,
        arrival_lag=Distribution.of(run.lags),
        programs_not_started=len(ordered) - len(arrived),
        calls_cancelled=run.cancelled,
        wall_seconds=wall,
        time_scale=options.time_scale,
    )


def run_live(programs: Sequence[ProgramSpec], options: LiveOptions) -> LiveRunResult:
    """:func:`run_programs` in a fresh event loop (for scripts and the demo)."""
    return asyncio.run(run_programs(programs, options))
