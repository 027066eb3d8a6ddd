"""Settings of ``autellix demo`` (flags, ``AUTELLIX_DEMO_*`` environment, YAML).

The defaults are chosen so that on a 2-core machine with no GPU the whole demo takes about two minutes
and the program-aware gain is visible; docs/demo.md says why each one is what it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    """What the demo starts and what it runs through it."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_DEMO_", extra="forbid")

    engines: int = Field(2, ge=1, le=8, description="simulated engines, each with its own sidecar")
    profile: Literal["a100-llama3-8b", "h100-llama3-8b", "a100-llama3-70b-tp4", "h100-llama3-70b-tp4"] = (
        Field("a100-llama3-8b", description="step-time profile (GPU and model) the engines imitate")
    )
    max_num_seqs: int = Field(
        16,
        ge=1,
        description="engine batch size; vLLM's A100 default is 256, shrunk so that calls queue at a load "
        "this machine can stream (queueing is where program-aware scheduling matters)",
    )
    num_gpu_blocks: int | None = Field(
        None, ge=16, description="KV blocks per engine (default: the profile's)"
    )
    time_scale: float = Field(
        0.5, gt=0, description="wall seconds per simulated second (engines and load generator alike)"
    )
    programs: int = Field(120, ge=3, description="programs of the mixed workload (sharegpt, bfcl, lats)")
    rate: float = Field(2.0, gt=0, description="program arrivals per simulated second (Poisson)")
    max_prompt_tokens: int = Field(
        2048, ge=256, description="ShareGPT conversations end before longer prompts"
    )
    lats_calls_mean: float = Field(
        40.0, ge=2, description="mean calls per tree search (the paper's LATS averages 160: scaled down)"
    )
    scheduler: Literal["atlas", "plas"] = Field(
        "atlas",
        description="program-aware sidecar queue: atlas (critical path; equals PLAS on chat and tool "
        "chains, so it serves the mixed workload) or plas",
    )
    seed: int = Field(0, description="seed of the workload and the engines")
    duration: float = Field(
        240.0, gt=0, description="hard deadline per setup, wall seconds (leftover calls are cancelled)"
    )
    redis_url: str | None = Field(
        None, description="use this Redis for the program table (default: in memory)"
    )
    simulate: bool = Field(True, description="also run the discrete-event simulation of both setups")
    progress: bool = Field(True, description="show a progress bar per setup")
    out_dir: str = Field("results/demo", description="where the demo writes demo.json, demo.png and logs")
