"""``autellix demo``: the main job in one command, on loopback, with no GPU and no Redis.

What it does, all with real processes (DESIGN.md §1, §5):

1. Builds one seeded mixed agentic workload (chat chains, tool-use chains, tree-search DAGs; the
   paper's Mixed, reference.md §2), scaled down so that two cores can stream it: ShareGPT prompts
   capped, tree searches shorter than the paper's.
2. For each setup -- the *baseline* (FCFS sidecars, FCFS engines, round-robin router: today's
   program-unaware serving) and *autellix* (ATLAS sidecars behind the KV working-set gate and budget,
   the sidecar's defaults; priority engines; the locality router) --
   starts ``--engines`` simulated engines, one sidecar per engine and one proxy (in-memory program table,
   or ``--redis-url``) on free loopback ports, runs every program through the proxy with the live load
   generator (loadgen/runner.py), and stops them all (also on Ctrl-C or SIGTERM; the services also get
   SIGTERM from the kernel if the demo itself is killed).
3. Prints program-level token latency per setup and workload kind, the gain, and whether the machine
   kept up: the *pacing* (the token gap the clients saw / the gap the engines simulated; 1.00 = the
   Python processes added nothing) and each process's CPU share. Optionally the discrete-event
   simulation of the same two setups on the same programs, for comparison.
4. Writes ``demo.json`` and ``demo.png`` (latency CDF and per-kind means) to ``--out-dir``.

Why the sidecars use a fixed admission window of ``max_num_seqs + 2``: the demo knows the engines'
batch size, and it is the sidecar model the simulation uses, so live and simulated runs compare like
with like. Why ``atlas`` for the whole mixed workload: a chain's critical path is the sum of its calls,
so ATLAS places chat and tool-use programs exactly as PLAS does, and tree searches as ATLAS should.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from autellix.demo_config import DemoSettings
from autellix.engine_adapters.scheduling.working_set import WorkingSetParams
from autellix.launch import ServiceGroup, ServiceProcess, service, wait_backends_healthy
from autellix.loadgen.live_config import SUMMARY_HEADER, format_table, result_rows, workload_params
from autellix.loadgen.program import ProgramSpec
from autellix.loadgen.runner import LiveOptions, LiveRunResult, run_live
from autellix.records import MetricsSummary
from autellix.simulator.cluster_systems import SystemPreset, get_system

# A run whose load generator started programs this late (p95, wall s), or whose token gaps stretched by
# this factor, did not get the CPU it needed; the report says so instead of presenting its figures as clean.
BUSY_LAG = 0.05
BUSY_PACING = 1.05
KIND_NAMES = {"sharegpt": "chat", "bfcl": "tool-use", "lats": "tree search"}


@dataclass(frozen=True, slots=True)
class Setup:
    """One way to serve the workload, live and in simulation."""

    name: str
    title: str
    engine_policy: str  # the engines' --scheduling-policy
    scheduler: str  # the sidecars' --scheduler
    router: str  # the proxy's --router
    preset: SystemPreset  # the same system in the discrete-event simulation


def setups(settings: DemoSettings) -> tuple[Setup, Setup]:
    baseline = SystemPreset("baseline", "FCFS sidecars, FCFS engines, round robin", queue="fcfs")
    aware = dataclasses.replace(get_system("autellix"), queue=settings.scheduler)
    return (
        Setup("baseline", "FCFS sidecars, FCFS engines, round-robin router", "fcfs", "fcfs", "round_robin",
              baseline),
        Setup("autellix",
              f"{settings.scheduler.upper()} sidecars (working-set gate), priority engines, locality router",
              "priority", settings.scheduler, "autellix", aware),
    )  # fmt: skip


def resume_setup(settings: DemoSettings) -> Setup:
    """The program-aware setup with abort-and-resume preemption in its sidecars (``--preempt``; issue 14
    item 3), with the ``autellix-resume`` preset as its simulation."""
    preset = dataclasses.replace(get_system("autellix-resume"), queue=settings.scheduler)
    title = f"{settings.scheduler.upper()} sidecars (working-set gate, abort-and-resume), priority engines"
    return Setup("autellix-resume", title + ", locality router", "priority", settings.scheduler, "autellix",
                 preset)  # fmt: skip


def residency_setup(settings: DemoSettings) -> Setup:
    """The program-aware setup with the proxy's ``residency`` router instead of the locality one (issue
    14 item 2: every call of a program goes to its home, new programs where the working set has room),
    with the ``autellix`` preset routed the same way as its simulation."""
    preset = dataclasses.replace(get_system("autellix"), queue=settings.scheduler).with_router("residency")
    title = f"{settings.scheduler.upper()} sidecars (working-set gate), priority engines, residency router"
    return Setup("autellix-residency", title, "priority", settings.scheduler, "residency", preset)


def atlas_setup(settings: DemoSettings) -> Setup:
    """Today's program-aware sidecar before the working-set gate (``--working-set off --no-kv-budget``):
    what the gate is measured against (issue 14), with the ``autellix-las`` preset as its simulation."""
    preset = dataclasses.replace(get_system("autellix-las"), queue=settings.scheduler)
    return Setup("atlas", f"{settings.scheduler.upper()} sidecars (no gate, no KV budget), priority engines, "
                 "locality router", "priority", settings.scheduler, "autellix", preset)  # fmt: skip


def demo_programs(settings: DemoSettings) -> list[ProgramSpec]:
    from autellix.loadgen.arrivals import make_workload

    overrides = {"lats": {"calls_mean": settings.lats_calls_mean, "max_iterations": 10}}
    params = workload_params("mixed", overrides, settings.max_prompt_tokens)
    return make_workload("mixed", settings.programs, settings.rate, settings.seed, params)


def scrape_series(url: str) -> dict[str, float]:
    """Prometheus text of ``url/metrics`` as {series (name and labels): value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=5.0) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            values[head] = float(value)
    return values


def scrape(url: str) -> dict[str, float]:
    """Prometheus text of ``url/metrics`` as {name: value summed over labels}."""
    values: dict[str, float] = {}
    for head, value in scrape_series(url).items():
        name = head.split("{", 1)[0]
        values[name] = values.get(name, 0.0) + value
    return values


@dataclass(frozen=True, slots=True)
class GateSeen:
    """What the sidecars' working-set gates did during a run, from their /metrics sampled every
    ``GateWatch.INTERVAL`` wall seconds (a gauge between samples is not seen)."""

    max_waiting_programs: int  # most programs held at one sidecar's gate at once
    max_waiting_calls: int
    max_resident_share: float  # the residents' footprint / the engine's KV cache, at most
    kv_capacity_tokens: int  # one engine's cache, as its sidecar reports it (0: unknown: gate open)
    displaced: int  # programs that lost their place, all sidecars
    samples: int
    preemptions: int = 0  # calls stopped to be resumed (abort-and-resume), all sidecars

    @property
    def engaged(self) -> bool:
        return self.max_waiting_programs > 0 or self.displaced > 0

    def describe(self) -> str:
        if not self.kv_capacity_tokens:
            return "working-set gate open: the sidecars never learned the engines' KV cache size"
        cache = f"{self.kv_capacity_tokens:,}-token KV cache"
        share = f"residents at most {self.max_resident_share:.0%} of the {cache}"
        if not self.engaged:
            return f"working-set gate never held a program back ({share})"
        held = f"{self.max_waiting_programs} programs ({self.max_waiting_calls} calls)"
        return f"working-set gate held up to {held} at once, displaced {self.displaced}; {share}"


class GateWatch:
    """Samples every sidecar's gate gauges in a thread while a run goes on (the run is asyncio)."""

    INTERVAL = 0.5
    PREFIX = "autellix_sidecar_"

    def __init__(self, sidecars: Sequence[ServiceProcess]) -> None:
        self._urls = [s.url for s in sidecars]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gate-watch", daemon=True)
        self._waiting = self._calls = self._samples = self._capacity = 0
        self._share = 0.0
        self._last: list[dict[str, float]] = []

    def __enter__(self) -> GateWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()  # the counters' final values

    def _sample(self) -> None:
        try:
            series = [scrape_series(url) for url in self._urls]
        except (OSError, ValueError):
            return  # a busy sidecar answers the next sample
        self._last = series
        self._samples += 1
        for values in series:
            self._waiting = max(self._waiting, int(values.get(self.PREFIX + "gate_waiting_programs", 0)))
            self._calls = max(self._calls, int(values.get(self.PREFIX + "gate_waiting_calls", 0)))
            capacity = values.get(self.PREFIX + "kv_capacity_tokens", 0.0)
            self._capacity = max(self._capacity, int(capacity))
            if capacity > 0:
                resident = values.get(self.PREFIX + "resident_tokens", 0.0)
                self._share = max(self._share, resident / capacity)

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def seen(self) -> GateSeen:
        key = self.PREFIX + 'gate_programs_total{event="displaced"}'
        stops = self.PREFIX + "preemptions_total"
        return GateSeen(self._waiting, self._calls, self._share, self._capacity,
                        int(sum(values.get(key, 0.0) for values in self._last)), self._samples,
                        int(sum(values.get(stops, 0.0) for values in self._last)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class StackRun:
    """What one setup's live run measured."""

    setup: Setup
    result: LiveRunResult
    engine_token_gap: float  # the engines' own mean inter-token latency, simulated s
    engine_preemptions: int
    engine_hit_rate: float  # engines' view: prefix-cache hits / queries (tokens)
    cpu_share: dict[str, float]  # process -> CPU seconds / wall seconds (1.0 = one core)
    startup_seconds: float
    gate: GateSeen | None = None  # None: the sidecars had no working-set gate (or there were none)

    @property
    def pacing(self) -> float:
        return self.result.token_gap / self.engine_token_gap if self.engine_token_gap else 0.0


def scaled_queue_params(time_scale: float) -> dict[str, object]:
    """The queue's default level ladder in *wall* seconds: a sidecar measures service on the wall clock,
    so with engines running ``time_scale`` wall seconds per simulated second its boundaries (and with
    them the quanta) and its T = 0 guard shrink by the same factor; beta is a ratio and stays."""
    from autellix.engine_adapters.scheduling import DEFAULT_BOUNDARIES, MultiLevelParams

    return {
        "boundaries": [b * time_scale for b in DEFAULT_BOUNDARIES],
        "service_floor": MultiLevelParams().service_floor * time_scale,
    }


# the working-set gate's settings that are durations (seconds); the rest are ratios or an order
_GATE_SECONDS = ("residency_quantum", "ttl_default", "ttl_min", "ttl_max", "service_floor")


def scaled_gate_params(params: WorkingSetParams, time_scale: float) -> dict[str, object]:
    """The preset's working-set gate with its durations in *wall* seconds, for the same reason as
    :func:`scaled_queue_params`: the sidecar's gate runs on the wall clock (its quantum, its idle TTLs
    and their clamps, its T = 0 guard), while the preset's figures are simulated seconds. Unscaled, a
    live gate at time scale 0.2 would keep an idle resident's place, and refuse to displace one, five
    times longer than the simulation of the same preset. Learned tool gaps are measured on the wall
    clock already, so they need nothing."""
    values = dataclasses.asdict(params)
    return {name: value * time_scale if name in _GATE_SECONDS else value for name, value in values.items()}


def _service(kind: str, log_dir: Path, args: list[str], name: str) -> ServiceProcess:
    """A service of the demo's own stack: dies with the demo, and ignores the caller's AUTELLIX_* variables
    (an exported AUTELLIX_API_KEY, say, would lock the demo's own load generator out)."""
    return service(kind, log_dir, args, name, die_with_parent=True, inherit_autellix_env=False)


def has_gate(setup: Setup) -> bool:
    return setup.preset.working_set is not None


def start_engines(
    settings: DemoSettings, setup: Setup, log_dir: Path, group: ServiceGroup
) -> list[ServiceProcess]:
    """``settings.engines`` simulated engines with ``setup``'s scheduling policy, started and healthy."""
    engine_args = ["--profile", settings.profile, "--time-scale", str(settings.time_scale),
                   "--max-num-seqs", str(settings.max_num_seqs), "--scheduling-policy", setup.engine_policy,
                   "--seed", str(settings.seed), "--log-level", "warning"]  # fmt: skip
    if settings.num_gpu_blocks:
        engine_args += ["--num-gpu-blocks", str(settings.num_gpu_blocks)]
    engines = [_service("sim-engine", log_dir, engine_args, f"{setup.name}-engine-{i}")
               for i in range(settings.engines)]  # fmt: skip
    return group.start_all(engines)


def start_stack(settings: DemoSettings, setup: Setup, log_dir: Path, group: ServiceGroup) -> ServiceProcess:
    """Engines, then their sidecars, then the proxy; returns the proxy (every backend healthy)."""
    engines = start_engines(settings, setup, log_dir, group)
    sidecar_args = ["--engine-kind", "sim", "--scheduler", setup.scheduler, "--window-mode", "fixed",
                    "--max-in-flight", str(settings.max_num_seqs + 2), "--log-level", "warning"]  # fmt: skip
    gate = setup.preset.working_set
    if gate is None:  # the baseline and atlas: no working-set gate, no KV budget (the defaults)
        sidecar_args += ["--working-set", "off", "--no-kv-budget"]
    else:
        sidecar_args += ["--working-set", gate.order]
    sidecars = [_service("sidecar", log_dir, ["--engine-url", e.url, *sidecar_args],
                        f"{setup.name}-sidecar-{i}")
                for i, e in enumerate(engines)]  # fmt: skip
    if setup.scheduler != "fcfs":
        for sidecar in sidecars:
            sidecar.env["AUTELLIX_SCHEDULER_PARAMS"] = json.dumps(scaled_queue_params(settings.time_scale))
    if gate is not None:
        gate_params = json.dumps(scaled_gate_params(gate, settings.time_scale))
        for sidecar in sidecars:
            sidecar.env["AUTELLIX_WORKING_SET_PARAMS"] = gate_params
    if setup.preset.preempt is not None:  # abort-and-resume; its minimum quantum in wall seconds too
        params = setup.preset.preempt
        scaled = {**dataclasses.asdict(params), "min_run": params.min_run * settings.time_scale}
        for sidecar in sidecars:
            sidecar.env["AUTELLIX_PREEMPT"] = "true"
            sidecar.env["AUTELLIX_PREEMPT_PARAMS"] = json.dumps(scaled)
    group.start_all(sidecars)
    proxy_args = [f"--backend=engine-{i}={s.url}" for i, s in enumerate(sidecars)]
    # A backend that answers a health check late is busy, not dead: on a loaded 2-core machine a 1 s
    # timeout can mark every backend unhealthy at once and turn a burst of calls into 503s.
    proxy_args += ["--router", setup.router, "--health-check-timeout", "10", "--log-level", "warning"]
    if settings.redis_url:
        proxy_args += ["--redis-url", settings.redis_url]
    proxy = _service("proxy", log_dir, proxy_args, f"{setup.name}-proxy")
    group.start_all([proxy])
    wait_backends_healthy(proxy)
    return proxy


def run_setup(
    settings: DemoSettings, setup: Setup, programs: Sequence[ProgramSpec], log_dir: Path
) -> StackRun:
    started = time.monotonic()
    with ServiceGroup() as group:
        proxy = start_stack(settings, setup, log_dir, group)
        options = LiveOptions(
            url=proxy.url,
            time_scale=settings.time_scale,
            duration=settings.duration,
            program_id_suffix=f"~{setup.name}-{int(time.time())}",
            end_programs=True,
            progress=settings.progress,
        )
        gated = [s for s in group.services if "-sidecar-" in s.name] if has_gate(setup) else []
        return measure_run(setup, group, programs, options, time.monotonic() - started, gated)


def measure_run(
    setup: Setup,
    group: ServiceGroup,
    programs: Sequence[ProgramSpec],
    options: LiveOptions,
    startup: float,
    gated: Sequence[ServiceProcess] = (),
) -> StackRun:
    """Run ``programs`` against a started stack (``group``, engines named ``*-engine-*``) and measure it;
    ``gated``: sidecars whose working-set gates to watch."""
    engines = [s for s in group.services if "-engine-" in s.name]
    before = [scrape(e.url) for e in engines]
    cpu_before = {s.name: s.cpu_seconds() for s in group.services}
    load_cpu, wall0 = time.process_time(), time.monotonic()
    watch = GateWatch(gated) if gated else None
    with watch or contextlib.nullcontext():
        result = run_live(programs, options)
    wall = max(time.monotonic() - wall0, 1e-9)
    cpu = {s.name: (s.cpu_seconds() - cpu_before[s.name]) / wall for s in group.services}
    cpu["load generator"] = (time.process_time() - load_cpu) / wall
    after = [scrape(e.url) for e in engines]

    def delta(name: str) -> float:
        return sum(a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before, strict=True))

    gaps = delta("vllm:inter_token_latency_seconds_count")
    queries = delta("vllm:prefix_cache_queries_total")
    return StackRun(
        setup=setup,
        result=result,
        engine_token_gap=delta("vllm:inter_token_latency_seconds_sum") / gaps if gaps else 0.0,
        engine_preemptions=int(delta("vllm:num_preemptions_total")),
        engine_hit_rate=delta("vllm:prefix_cache_hits_total") / queries if queries else 0.0,
        cpu_share=cpu,
        startup_seconds=startup,
        gate=watch.seen() if watch is not None else None,
    )


def simulate_setups(
    settings: DemoSettings, programs: Sequence[ProgramSpec], pair: Sequence[Setup]
) -> dict[str, MetricsSummary]:
    """The discrete-event simulation of the same setups on the same programs (engine settings alike)."""
    from autellix.simulator.cluster import ClusterConfig, simulate
    from autellix.simulator.cluster_prompts import TokenCache

    config = ClusterConfig(
        num_engines=settings.engines,
        profile=settings.profile,
        max_num_seqs=settings.max_num_seqs,
        num_gpu_blocks=settings.num_gpu_blocks,
        seed=settings.seed,
    )
    tokens = TokenCache()
    return {s.name: simulate(programs, s.preset, config, tokens=tokens).summary for s in pair}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def report(settings: DemoSettings, runs: Sequence[StackRun], simulated: dict[str, MetricsSummary]) -> str:
    rows = [row for run in runs for row in result_rows(run.setup.name, run.result)]
    lines = ["", "Program-level token latency (simulated seconds per generated token; lower is better)"]
    lines += [format_table(["setup", "workload", *SUMMARY_HEADER], rows), ""]
    base, aware = runs[0].result, runs[-1].result
    gains = [f"all {_ratio(base.summary.token_latency.mean, aware.summary.token_latency.mean)}"]
    for kind, summary in aware.by_workload.items():
        if kind in base.by_workload:
            gain = _ratio(base.by_workload[kind].token_latency.mean, summary.token_latency.mean)
            gains.append(f"{KIND_NAMES.get(kind, kind)} {gain}")
    lat_b, lat_a = base.summary.token_latency, aware.summary.token_latency
    lines.append(f"autellix vs baseline, mean token latency lower by: {', '.join(gains)}")
    lines.append(f"  P95 {_ratio(lat_b.p95, lat_a.p95)}, P99 {_ratio(lat_b.p99, lat_a.p99)}")
    lines += ["", "Did this machine keep up? (the figures are only as good as the pacing)"]
    for run in runs:
        r = run.result
        top = sorted(run.cpu_share.items(), key=lambda kv: -kv[1])
        cpu = ", ".join(f"{name.removeprefix(run.setup.name + '-')} {share:.0%}" for name, share in top)
        lines.append(
            f"  {run.setup.name}: pacing {run.pacing:.2f} (client token gap {r.token_gap * 1000:.1f} ms / "
            f"engine {run.engine_token_gap * 1000:.1f} ms, simulated), arrival lag p99 "
            f"{r.arrival_lag.p99 * 1000:.0f} ms, wall {r.wall_seconds:.0f} s, errors "
            f"{r.errors_by_kind or 'none'}, cancelled {r.calls_cancelled}, engine preemptions "
            f"{run.engine_preemptions}, engine cache hits {run.engine_hit_rate:.0%}"
        )
        lines.append(f"    CPU (share of one core): {cpu}")
        if run.gate is not None:
            lines.append(f"    {run.gate.describe()}")
        if r.arrival_lag.p95 > BUSY_LAG or run.pacing > BUSY_PACING:
            lines.append(
                "    WARNING: the machine was busy (other processes competing for CPU): programs started up "
                f"to {r.arrival_lag.max:.1f} s late and its figures are noisy; rerun when it is quiet"
            )
    if simulated:
        lines += ["", "The same programs and setups in the discrete-event simulation (virtual time):"]
        for run in runs:
            sim = simulated[run.setup.name].token_latency.mean
            live = run.result.summary.token_latency.mean
            lines.append(
                f"  {run.setup.name}: simulated mean {sim:.4f} s/token, live {live:.4f}, live/sim "
                f"{_ratio(live, sim)}"
            )
        lines.append(
            "  (past capacity, queueing amplifies small timing differences and a few short programs weigh "
            "most in the mean;\n   benchmarks/bench_live_vs_sim.py checks agreement at a moderate load)"
        )
    return "\n".join(lines)


def write_plot(runs: Sequence[StackRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = sorted({k for run in runs for k in run.result.by_workload})
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = sorted(lat for p in run.result.programs if (lat := p.token_latency) is not None)
        if values:
            cdf.step(values, [(j + 1) / len(values) for j in range(len(values))], where="post",
                     label=f"{run.setup.name} ({run.setup.title})")  # fmt: skip
        means = [run.result.by_workload[k].token_latency.mean if k in run.result.by_workload else 0.0
                 for k in kinds]  # fmt: skip
        bars.bar([x + i * width for x in range(len(kinds))], means, width, label=run.setup.name)
    cdf.set_xscale("log")
    cdf.set_xlabel("program token latency (s/token, log)")
    cdf.set_ylabel("fraction of programs")
    cdf.set_title("CDF over programs")
    cdf.grid(True, alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    bars.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(kinds))])
    bars.set_xticklabels([KIND_NAMES.get(k, k) for k in kinds])
    bars.set_ylabel("mean program token latency (s/token)")
    bars.set_title("by workload kind")
    bars.legend()
    fig.suptitle("autellix demo: live stack on loopback, simulated A100 engines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(settings: DemoSettings) -> int:
    out_dir = Path(settings.out_dir)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    programs = demo_programs(settings)
    pair = setups(settings)
    kinds = {k: sum(p.workload == k for p in programs) for k in KIND_NAMES}
    calls = sum(p.num_calls for p in programs)
    print("autellix demo: program-aware serving, live on loopback (no GPU needed)")
    mix = ", ".join(f"{n} {KIND_NAMES[k]}" for k, n in kinds.items())
    print(
        f"  engines : {settings.engines} simulated {settings.profile} (calibrated step-time model), "
        f"max_num_seqs {settings.max_num_seqs} (vLLM's default is 256: shrunk so that calls queue at a "
        f"load this machine can stream), time scale {settings.time_scale:g}"
    )
    print(
        f"  workload: {len(programs)} mixed programs ({mix}; {calls} calls), Poisson {settings.rate:g} "
        "programs/s: a burst past the engines' capacity, so calls queue"
    )
    for setup in pair:
        print(f"  {setup.name:<8}: {setup.title}")
    print(f"  program table: {'Redis at ' + settings.redis_url if settings.redis_url else 'in memory'}")
    # Both signals are handled here, not left to Python's defaults: a shell without job control starts a
    # background job (``autellix demo &``, a CI step, a test suite run as a job) with SIGINT *ignored*,
    # and an ignored SIGINT would leave a kill -INT without effect and the services running.
    previous = {signum: signal.signal(signum, _terminate) for signum in (signal.SIGINT, signal.SIGTERM)}
    runs: list[StackRun] = []
    try:
        for number, setup in enumerate(pair, start=1):
            print(
                f"\n[{number}/{len(pair)}] {setup.name}: starting {settings.engines} engines, "
                f"{settings.engines} sidecars and a proxy, then running the programs",
                flush=True,
            )
            runs.append(run_setup(settings, setup, programs, log_dir))
    except KeyboardInterrupt:
        print("\ninterrupted: every service was stopped", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    simulated = simulate_setups(settings, programs, pair) if settings.simulate else {}
    print(report(settings, runs, simulated))
    plot = out_dir / "demo.png"
    write_plot(runs, plot)
    document: dict[str, Any] = {
        "settings": settings.model_dump(exclude={"redis_url"}),
        "runs": {
            run.setup.name: {
                "title": run.setup.title,
                **run.result.to_dict(),
                "engine_token_gap": run.engine_token_gap,
                "pacing": run.pacing,
                "engine_preemptions": run.engine_preemptions,
                "engine_hit_rate": run.engine_hit_rate,
                "cpu_share": run.cpu_share,
                "startup_seconds": run.startup_seconds,
                "working_set_gate": dataclasses.asdict(run.gate) if run.gate else None,
            }
            for run in runs
        },
        "simulated": {name: summary.to_dict() for name, summary in simulated.items()},
    }
    (out_dir / "demo.json").write_text(json.dumps(document, indent=2))
    print(f"\nwrote {out_dir / 'demo.json'} and {plot} (service logs in {log_dir})")
    return 0
