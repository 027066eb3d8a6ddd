"""Settings of ``autellix loadgen`` (flags, ``AUTELLIX_*`` environment, YAML), and how they become programs.

Light on purpose: the CLI imports this module to build ``--help``; workloads are imported only when the
programs are built. ``workload_params`` is JSON text (a flag like any other) holding the fields of the
workload's ``Params`` to change; nested workloads nest: ``{"lats": {"calls_mean": 40}}`` for ``mixed``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if typing.TYPE_CHECKING:
    from autellix.loadgen.program import ProgramSpec
    from autellix.loadgen.runner import LiveRunResult
    from autellix.records import MetricsSummary

__all__ = [
    "SUMMARY_HEADER",
    "LoadgenSettings",
    "format_table",
    "params_from_mapping",
    "result_rows",
    "run_loadgen",
    "summary_cells",
    "workload_params",
]


class LoadgenSettings(BaseSettings):
    """What to send, where, how fast, and for how long."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_", extra="forbid")

    url: str = Field(
        "http://127.0.0.1:8080",
        description="base URL of an OpenAI-compatible server: the autellix proxy, a sidecar, an engine",
    )
    model: str | None = Field(None, description="model name to request (default: the first of /v1/models)")
    api: Literal["chat", "responses", "messages"] = Field(
        "chat",
        description="the generation API of every call: /v1/chat/completions, /v1/responses, /v1/messages",
    )
    workload: str = Field("mixed", description="workload: sharegpt, bfcl, lats or mixed")
    trace: str | None = Field(None, description="JSONL trace to replay instead of a workload")
    num_programs: int = Field(30, ge=1, description="programs to run (of the workload, or the trace's first)")
    rate: float = Field(0.5, gt=0, description="program arrivals per simulated second (Poisson)")
    offline: bool = Field(False, description="all programs arrive at once (the offline batch setting)")
    seed: int = Field(0, description="seed of the programs and their arrivals")
    workload_params: str | None = Field(
        None, description='JSON object of workload Params fields, e.g. {"lats": {"calls_mean": 40}}'
    )
    max_prompt_tokens: int | None = Field(
        None, ge=64, description="ShareGPT (alone or in mixed): end a conversation before a longer prompt"
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="wall seconds per simulated second: arrivals and tool delays are compressed by it and "
        "latencies divided by it (match the engines' --time-scale; 1.0 for real engines)",
    )
    duration: float = Field(
        600.0, gt=0, description="hard deadline in wall seconds: calls still running then are cancelled"
    )
    connect_timeout: float = Field(5.0, gt=0, description="seconds to connect")
    read_timeout: float = Field(600.0, gt=0, description="seconds a call may stay silent")
    max_connections: int = Field(1024, ge=1, description="most concurrent connections")
    program_headers: bool = Field(True, description="send X-Program-Id and X-Thread-Id")
    program_id_suffix: str | None = Field(
        None, description="appended to program ids (default: a random tag per run, so runs never mix)"
    )
    end_programs: bool = Field(False, description="DELETE /v1/programs/{id} when a program ends (proxy)")
    agentic_context: bool = Field(
        False,
        description="also send the program identity in the body as vllm_xargs.agentic_context (program_id, "
        "step_id, expected_resume), as vllm-router's --enable-program-scheduling reads it",
    )
    api_key: str | None = Field(None, description="bearer token for servers that need one")
    out: str = Field("results/loadgen.json", description="where to write the JSON results")
    records: bool = Field(False, description="also write every program and call record to the JSON")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("workload_params")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object")
        return value

    def programs(self) -> list[ProgramSpec]:
        """The programs to run: the trace's first ``num_programs``, or a generated workload."""
        from autellix.loadgen.arrivals import make_workload
        from autellix.loadgen.trace import read_trace

        if self.trace:
            return sorted(read_trace(self.trace), key=lambda p: p.arrival_time)[: self.num_programs]
        overrides: dict[str, Any] = json.loads(self.workload_params) if self.workload_params else {}
        params = workload_params(self.workload, overrides, self.max_prompt_tokens)
        rate = None if self.offline else self.rate
        return make_workload(self.workload, self.num_programs, rate, self.seed, params)


def workload_params(name: str, overrides: dict[str, Any], max_prompt_tokens: int | None = None) -> object:
    """The ``Params`` of workload ``name`` with ``overrides`` and the ShareGPT prompt cap applied."""
    from autellix.loadgen.workloads import get_workload

    params_type = get_workload(name).params_type
    overrides = dict(overrides)
    if max_prompt_tokens is not None:
        if name == "sharegpt":
            overrides["max_prompt_tokens"] = max_prompt_tokens
        elif name == "mixed":
            overrides["sharegpt"] = {**overrides.get("sharegpt", {}), "max_prompt_tokens": max_prompt_tokens}
    return params_from_mapping(params_type, overrides, params_type())


def params_from_mapping(cls: type[Any], values: dict[str, Any], base: Any, where: str = "") -> Any:
    """``base`` (a dataclass of type ``cls``) with the fields in ``values`` replaced; nested dataclasses
    take nested mappings, lists become tuples. An unknown field is a ValueError naming the known ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown workload parameter {where + key!r}; known: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            assert isinstance(hint, type)
            value = params_from_mapping(hint, value, getattr(base, key), f"{where}{key}.")
        elif isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


def summary_cells(summary: MetricsSummary) -> list[str]:
    """Table cells of one summary: programs done, token latency mean/P50/P95/P99 (s/token), generated
    tokens/s, prefix-cache hit rate."""
    lat = summary.token_latency
    return [
        f"{summary.programs_completed}/{summary.programs}",
        f"{lat.mean:.4f}",
        f"{lat.p50:.4f}",
        f"{lat.p95:.4f}",
        f"{lat.p99:.4f}",
        f"{summary.token_throughput:.0f}",
        f"{summary.prefix_cache_hit_rate:.2f}",
    ]


SUMMARY_HEADER = ["done", "lat mean", "lat p50", "lat p95", "lat p99", "tok/s", "hit"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns right-aligned except the first two."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < 2 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def result_rows(label: str, result: LiveRunResult) -> list[list[str]]:
    """One row per workload kind plus one for all programs (label in the first column)."""
    rows = [[label, kind, *summary_cells(s)] for kind, s in result.by_workload.items()]
    if len(result.by_workload) != 1:
        rows.append([label, "all", *summary_cells(result.summary)])
    return rows


def run_loadgen(settings: LoadgenSettings) -> int:
    """``autellix loadgen``: build the programs, run them, print a table, write JSON."""
    import secrets
    import sys
    from pathlib import Path

    import aiohttp

    from autellix.loadgen.runner import LiveOptions, run_live
    from autellix.settings import SettingsError

    try:
        programs = settings.programs()
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(str(exc).splitlines()[0]) from exc
    suffix = settings.program_id_suffix
    options = LiveOptions(
        url=settings.url,
        model=settings.model,
        time_scale=settings.time_scale,
        duration=settings.duration,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
        program_headers=settings.program_headers,
        program_id_suffix=f"~{secrets.token_hex(3)}" if suffix is None else suffix,
        end_programs=settings.end_programs,
        agentic_context=settings.agentic_context,
        api_key=settings.api_key,
        progress=settings.progress,
        api=settings.api,
    )
    calls = sum(p.num_calls for p in programs)
    print(f"{len(programs)} programs ({calls} calls) -> {settings.url}, time scale {settings.time_scale}")
    try:
        result = run_live(programs, options)
    except (aiohttp.ClientError, OSError, RuntimeError) as exc:
        print(f"autellix loadgen: error: cannot use {settings.url}: {exc}", file=sys.stderr)
        return 1
    print(format_table(["run", "workload", *SUMMARY_HEADER], result_rows("live", result)))
    print(
        f"latency in simulated s/token; call ITL mean {result.call_itl.mean * 1000:.1f} ms; "
        f"wall {result.wall_seconds:.1f} s; arrival lag p99 {result.arrival_lag.p99 * 1000:.0f} ms; "
        f"not started {result.programs_not_started}; cancelled calls {result.calls_cancelled}; "
        f"errors {result.errors_by_kind or 'none'}"
    )
    path = Path(settings.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"settings": settings.model_dump(exclude={"api_key"}), **result.to_dict(settings.records)}
    path.write_text(json.dumps(document, indent=2))
    print(f"wrote {path}")
    return 0 if result.calls or not result.errors else 1
