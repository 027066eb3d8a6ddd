"""Settings of ``autellix simulate`` and ``autellix bench`` (flags, ``AUTELLIX_*`` environment, YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["a100-llama3-8b", "h100-llama3-8b", "a100-llama3-70b-tp4", "h100-llama3-70b-tp4", "unit"]


class ClusterSettings(BaseSettings):
    """What both commands share: the cluster, its engines and the shells' knobs."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_", extra="forbid")

    system: list[str] = Field(
        default_factory=lambda: ["vllm", "vllm-opt", "mlfq", "autellix-las", "autellix"],
        description="system preset to run: vllm, vllm-opt, mlfq, autellix, autellix-resume, autellix-fifo, "
        "autellix-las, autellix-kv, continuum, srpt, srpt-ws, mlfq-engine, autellix-engine, srpt-engine",
    )
    router: str | None = Field(None, description="override the presets' router (multi-engine runs)")
    engines: int = Field(1, ge=1, le=64, description="number of engines")
    profile: Profile = Field("a100-llama3-8b", description="step-time profile of every engine")
    max_num_seqs: int | None = Field(None, ge=1, description="engine max_num_seqs (default: the profile's)")
    num_gpu_blocks: int | None = Field(
        None, ge=1, description="KV blocks per engine (default: the profile's)"
    )
    overprovision: int = Field(2, ge=0, description="sidecar admission window slack over max_num_seqs")
    schedule_interval: int = Field(20, ge=1, description="engine-integrated mode: steps between rounds")
    seed: int = Field(0, description="seed of programs and arrivals")
    drain_factor: float = Field(
        3.0, ge=1.0, description="stop the clock at duration x this (unfinished programs are reported)"
    )


class SimulateSettings(ClusterSettings):
    """One simulated run per system on the same programs."""

    workload: str = Field("sharegpt", description="workload: sharegpt, bfcl, lats or mixed")
    trace: str | None = Field(None, description="JSONL trace to replay instead of a workload")
    rate: float = Field(0.5, gt=0, description="program arrivals per second (Poisson)")
    num_programs: int | None = Field(None, ge=1, description="programs to run (default: from --duration)")
    duration: float = Field(600.0, gt=0, description="seconds of arrivals when --num-programs is not set")
    out: str | None = Field(None, description="write the results as JSON to this file")


class BenchSettings(ClusterSettings):
    """A sweep: systems x rates for each workload, with plots and a markdown table."""

    workload: list[str] = Field(default_factory=lambda: ["sharegpt"], description="workloads to sweep")
    rate: list[float] = Field(
        default_factory=list, description="arrival rates to sweep (default: a per-workload range)"
    )
    duration: float = Field(1800.0, gt=0, description="seconds of arrivals per run")
    latency_factor: float = Field(
        2.0, gt=1.0, description="throughput at equal latency: the latency bound is this x the lowest one"
    )
    latency_stat: Literal["mean", "p95", "p99"] = Field("mean", description="latency statistic bounded")
    bound_factor: list[float] = Field(
        default_factory=lambda: [2.0, 5.0, 10.0],
        description="the ladder's relative latency bounds: these x the unloaded latency",
    )
    bound_absolute: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5], description="the ladder's absolute latency bounds, s/token"
    )
    reference: str = Field(
        "autellix", description="the system whose throughput the ladder divides by others'"
    )
    out_dir: str = Field("results/bench", description="where to write JSON, markdown and PNG plots")
    progress: bool = Field(True, description="show a progress bar")
    jobs: int = Field(
        1, ge=1, le=64, description="worker processes: workloads run in parallel (results are the same)"
    )
