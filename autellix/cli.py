"""The ``autellix`` console script: one subcommand per service or tool (DESIGN.md §5).

Each subcommand is a pair: a settings model (a pydantic-settings class in a light ``config`` module, so
that ``--help`` stays fast) and a ``run(settings) -> int`` function imported only when the subcommand
runs. Flags, ``AUTELLIX_*`` variables and ``--config`` YAML all feed that one model
(:mod:`autellix.settings`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic_settings import BaseSettings

from autellix import __version__
from autellix.settings import SettingsError, add_settings_arguments, load_settings


@dataclass(frozen=True, slots=True)
class Subcommand:
    """How to configure and run one subcommand; both named as ``module:attribute``."""

    name: str
    summary: str
    description: str
    settings: str
    run: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        name="demo",
        summary="the main job: start simulated engines on loopback and show program-aware serving",
        description=(
            "Start simulated engines, their sidecars and a proxy on loopback, run one seeded mixed "
            "agentic workload through today's setup and the program-aware one, print a comparison "
            "table and write a plot. Needs no GPU and no Redis."
        ),
        settings="autellix.demo_config:DemoSettings",
        run="autellix.demo:run",
    ),
    Subcommand(
        name="sim-engine",
        summary="run the simulated vLLM-compatible engine (no GPU needed)",
        description=(
            "Serve a GPU-free engine that schedules like vLLM V1 (token budget, chunked prefill, prefix "
            "cache, recompute preemption, FCFS or priority policy) and paces its steps with a calibrated "
            "step-time model, over vLLM's OpenAI-compatible HTTP API."
        ),
        settings="autellix.simulator.config:SimEngineSettings",
        run="autellix.simulator.server:run",
    ),
    Subcommand(
        name="sidecar",
        summary="run the per-engine sidecar (local program-aware queue and admission control)",
        description=(
            "Sit in front of one engine (vLLM, SGLang or the simulated engine): hold its local queue "
            "ordered by program-level priority (PLAS, ATLAS, MLFQ or FCFS), admit calls only while the "
            "engine has room so that our order decides who runs next, map the queue level onto the "
            "engine's priority field, and report each call's wait and execution time to the proxy."
        ),
        settings="autellix.engine_adapters.config:SidecarSettings",
        run="autellix.engine_adapters.sidecar:run",
    ),
    Subcommand(
        name="proxy",
        summary="run the program-aware front proxy (OpenAI-compatible, routes calls between engines)",
        description=(
            "Serve the OpenAI API in front of engines or their sidecars: identify each call's program "
            "(X-Program-Id, session headers, metadata.program_id), keep the program table (in memory, or "
            "in Redis shared by every replica), route with the locality-aware balancer or another router, "
            "forward the program's priority context, retry calls that fail before their first byte, and "
            "apply each call's completion report."
        ),
        settings="autellix.proxy.config:ProxySettings",
        run="autellix.proxy.app:run",
    ),
    Subcommand(
        name="simulate",
        summary="simulate a cluster in virtual time and compare systems on one workload and rate",
        description=(
            "Run a workload (or a JSONL trace) through a discrete-event simulation of the proxy, the "
            "routers, the sidecars' queues and simulated vLLM engines, once per --system, and print "
            "program-level token latency (s/token), queue waits and prefix-cache hits; --out writes JSON."
        ),
        settings="autellix.loadgen.sim_config:SimulateSettings",
        run="autellix.loadgen.sweep:run_simulate",
    ),
    Subcommand(
        name="bench",
        summary="sweep systems x arrival rates in simulation: JSON, markdown table, latency plots",
        description=(
            "For each --workload, simulate every --system at every --rate (default: a per-workload "
            "range) and write bench.json, bench.md and latency-vs-rate PNG plots, plus the highest rate "
            "each system sustains within a latency bound (throughput at equal latency)."
        ),
        settings="autellix.loadgen.sim_config:BenchSettings",
        run="autellix.loadgen.sweep:run_bench",
    ),
    Subcommand(
        name="loadgen",
        summary="drive a live OpenAI-compatible URL with a workload or a trace; JSON results",
        description=(
            "Run agentic programs (a workload or a JSONL trace) as real concurrent streaming clients "
            "against a URL (the autellix proxy, a sidecar, an engine): Poisson program arrivals, each "
            "call issued when its parents finish, X-Program-Id/X-Thread-Id headers; measure program-level "
            "token latency, TTFT, inter-token latency and errors by kind, and write JSON. --time-scale "
            "compresses a simulated-time workload for time-scaled simulated engines."
        ),
        settings="autellix.loadgen.live_config:LoadgenSettings",
        run="autellix.loadgen.live_config:run_loadgen",
    ),
)


def _resolve(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _settings_model(command: Subcommand) -> type[BaseSettings]:
    model = _resolve(command.settings)
    assert isinstance(model, type) and issubclass(model, BaseSettings)
    return model


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's settings module is imported for its flags."""
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Program-aware serving for LLM agents: proxy, sidecars, simulated engines, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"autellix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if command.name == selected:
            add_settings_arguments(sub, _settings_model(command))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {c.name for c in SUBCOMMANDS}
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in names else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    command = next(c for c in SUBCOMMANDS if c.name == args.command)
    try:
        settings = load_settings(_settings_model(command), args)
    except SettingsError as exc:
        print(f"autellix {command.name}: error: {exc}", file=sys.stderr)
        return 2
    run = _resolve(command.run)
    assert callable(run)
    runner: Callable[[BaseSettings], int] = run
    try:
        return runner(settings)
    except KeyboardInterrupt:
        return 130
    except SettingsError as exc:
        print(f"autellix {command.name}: error: {exc}", file=sys.stderr)
        return 2
