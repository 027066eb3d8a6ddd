"""The closest peer, live: ``vllm-router`` (PyPI, Rust) directly in front of the simulated engines, for
``bench_live_e2e.py`` (issue 14: "against the closest peer").

Two modes on the same engines (FCFS, as vLLM's default; the router sends no priority), no sidecar and
no autellix proxy in between:

- ``vllm-router-rr``: ``--policy round_robin`` (in the simulation this is the ``vllm-opt`` preset:
  FCFS engines with prefix caching, round robin, calls straight into the engine);
- ``vllm-router-ps``: the same plus ``--enable-program-scheduling``: programs are admitted to a backend
  against its KV capacity with a growth reserve, paused at tool boundaries and resumed in MRU order
  with "progress TTLs" (vllm-router 0.1.17, ``src/program_scheduling/``).

What its program scheduling needs, read in its source (0.1.17 sdist):

- Program identity: with the default ``program_scheduling_enable_key`` only requests whose body has
  ``vllm_xargs.agentic_context`` are scheduled as programs (agent headers such as ``x-session-id``
  count only with the ``auto`` key). The load generator's ``agentic_context`` option sends it
  (loadgen/runner.py rule 3): ``program_id``, ``step_id`` and ``expected_resume`` false on the
  program's last call, which is what lets the router release a finished program at once instead of
  holding its seat for a TTL. Both modes get the same bodies, so the flag is the only difference.
- Backend load: it scrapes each backend's ``/metrics`` every ``metrics_interval_seconds`` for
  ``vllm:kv_cache_usage_perc``, ``vllm:num_requests_running`` and ``vllm:num_requests_waiting``,
  which the simulated engine serves as vLLM does. It admits a new program to a backend only while
  that backend has fewer than ``admission_waiting_request_threshold`` (1 outside PD mode) requests
  waiting.
- KV capacity: it does not discover the cache size (it reads no ``vllm:cache_config_info``); the
  capacity-based admission and growth reserve act only when ``token_capacity_per_dp_rank`` is set.
  We set it as an operator would, to what the engine reports (``num_gpu_blocks * block_size`` from
  its ``vllm:cache_config_info``); without it the feature is a program-count cap of 64 per backend.
- Cost models: its batch-gain admission and TTLs use an offline-calibrated prefill cost (intercept,
  per 1k uncached tokens, per 1k squared) and decode step time (fixed, per request, per context
  token), and it warns at start-up when they are its reference values. We calibrate them from the
  engines' step-time model (simulator/stepmodel.py, in wall seconds at the time scale): a decode step
  costs ``C + Tw`` fixed (the weight-read floor: a batch of 16 stays below it), ``c_seq`` per request
  and ``c_kv`` per context token; a prefill costs ``C + Tw`` plus ``b`` per token and ``c_attn / 2``
  per token squared (causal attention); the share of decode throughput kept while prefill is mixed
  in stays at its default.
- Its timers are wall-clock. The engines run ``time_scale`` wall seconds per simulated second, so
  every time-valued setting is scaled by ``time_scale`` (as the demo scales our sidecars' level
  ladder), so that it sees the engines as it would see real ones: metrics every 1 s, acting TTL at
  most 10 s, queue timeout 600 s, forced resume 300 s, paused retention 1800 s, shared-prefix warm-up
  100 s (its defaults, in simulated seconds). Every other setting keeps its default.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rust_routers import RouterEnv, wait_answering

from autellix.demo import Setup, StackRun, measure_run, scrape_series, start_engines
from autellix.demo_config import DemoSettings
from autellix.launch import ServiceGroup, ServiceProcess, free_port
from autellix.loadgen.program import ProgramSpec
from autellix.loadgen.runner import LiveOptions
from autellix.simulator.cluster_systems import get_system
from autellix.simulator.stepmodel import get_profile

MODES = ("vllm-router-rr", "vllm-router-ps")
# its time-valued program-scheduling defaults (wall seconds), scaled by the engines' time scale
TIMED_DEFAULTS = {
    "metrics_interval_seconds": 1.0,
    "max_acting_ttl_seconds": 10.0,
    "queue_timeout_seconds": 600.0,
    "force_resume_timeout_seconds": 300.0,
    "paused_retention_ttl_seconds": 1800.0,
    "shared_prefix_freshness_warmup_seconds": 100.0,
}


def router_setup(name: str) -> Setup:
    """The Setup of one mode; its preset is the simulation of the engines behind round robin
    (``vllm-opt``), which models ``vllm-router-rr`` and no part of the program scheduling."""
    title = "vllm-router, round robin" if name == "vllm-router-rr" else "vllm-router, program scheduling"
    preset = get_system("vllm-opt").with_router("round_robin")
    return Setup(name, f"{title}, FCFS engines (no sidecar)", "fcfs", "none", "round_robin", preset)


def engine_kv_tokens(engine_url: str) -> int:
    """The engine's KV cache in tokens, from the labels of its ``vllm:cache_config_info``."""
    for series in scrape_series(engine_url):
        if series.startswith("vllm:cache_config_info{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
            return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    raise RuntimeError(f"{engine_url}/metrics has no vllm:cache_config_info")


def program_scheduling_config(kv_tokens: int, profile: str, time_scale: float) -> dict[str, object]:
    """Its program-scheduling settings for these engines (module docstring)."""
    step = get_profile(profile)
    wall = time_scale / 1000.0  # model milliseconds -> wall seconds
    return {
        "token_capacity_per_dp_rank": kv_tokens,
        **{name: value * time_scale for name, value in TIMED_DEFAULTS.items()},
        "prefill_cost_model": {
            "intercept_seconds": (step.C + step.Tw) * wall,
            "linear_seconds_per_1k_tokens": step.b * 1000 * wall,
            "quadratic_seconds_per_1k_tokens_squared": step.c_attn / 2 * 1e6 * wall,
        },
        "decode_throughput_model": {
            "fixed_step_seconds": (step.C + step.Tw) * wall,
            "batch_step_seconds_per_request": step.c_seq * wall,
            "context_step_seconds_per_token": step.c_kv * wall,
        },
    }


def router_command(env: RouterEnv, port: int, workers: Sequence[str], config: str | None) -> list[str]:
    command = [
        str(env.executable("vllm-router")),
        *("--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers),
        *("--policy", "round_robin", "--log-level", "warning"),
        *("--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())),
    ]
    if config is not None:
        command += ["--enable-program-scheduling", "--program-scheduling-config-json", config]
    return command


def engine_model(engine_url: str) -> str:
    with urllib.request.urlopen(engine_url + "/v1/models", timeout=5.0) as reply:
        return str(json.loads(reply.read())["data"][0]["id"])


def run_router(
    settings: DemoSettings, setup: Setup, programs: Sequence[ProgramSpec], log_dir: Path, env: RouterEnv
) -> StackRun:
    """Engines, then vllm-router in front of them in ``setup.name``'s mode; run and measure the programs.
    Raises ServiceStartError (with the router's log tail) if the router does not start or answer."""
    started = time.monotonic()
    with ServiceGroup() as group:
        engines = start_engines(settings, setup, log_dir, group)
        config = None
        if setup.name == "vllm-router-ps":
            kv_tokens = engine_kv_tokens(engines[0].url)
            config = json.dumps(program_scheduling_config(kv_tokens, settings.profile, settings.time_scale))
        port = free_port()
        router = ServiceProcess(
            name=f"{setup.name}-router",
            args=router_command(env, port, [e.url for e in engines], config),
            url=f"http://127.0.0.1:{port}",
            log_path=log_dir / f"{setup.name}-router-{port}.log",
            # its Python launcher takes --log-level warning but the Rust side knows only "warn" and falls
            # back to info (a line per program call); RUST_LOG takes precedence over the flag
            env={"NO_COLOR": "1", "RUST_LOG": "warn"},
            die_with_parent=True,
        )
        group.services.append(router.launch())
        probe = {"model": engine_model(engines[0].url), "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": 1}  # fmt: skip
        wait_answering(router, [probe])
        options = LiveOptions(
            url=router.url,
            time_scale=settings.time_scale,
            duration=settings.duration,
            program_id_suffix=f"~{setup.name}-{int(time.time())}",
            agentic_context=True,
            progress=settings.progress,
        )
        return measure_run(setup, group, programs, options, time.monotonic() - started)
