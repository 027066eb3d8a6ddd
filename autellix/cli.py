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
)


def _resolve(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def build_parser() -> argparse.ArgumentParser:
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
        settings_model = _resolve(command.settings)
        assert isinstance(settings_model, type) and issubclass(settings_model, BaseSettings)
        add_settings_arguments(sub, settings_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    command = next(c for c in SUBCOMMANDS if c.name == args.command)
    settings_model = _resolve(command.settings)
    assert isinstance(settings_model, type) and issubclass(settings_model, BaseSettings)
    try:
        settings = load_settings(settings_model, args)
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
