"""Settings of ``autellix sim-engine`` (flags, ``AUTELLIX_*`` environment, YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROFILE_NAMES = ("a100-llama3-8b", "h100-llama3-8b", "a100-llama3-70b-tp4", "h100-llama3-70b-tp4", "unit")


class SimEngineSettings(BaseSettings):
    """How one simulated engine behaves and where it listens."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_", extra="forbid")

    profile: Literal[
        "a100-llama3-8b", "h100-llama3-8b", "a100-llama3-70b-tp4", "h100-llama3-70b-tp4", "unit"
    ] = Field("a100-llama3-8b", description="step-time profile (GPU and model) to imitate")
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0 picks a free one)")
    model_name: str = Field("sim-llama", description="model name served on /v1/models")
    time_scale: float = Field(
        1.0, gt=0, description="wall seconds per simulated second: 1.0 is real time, 0.1 ten times faster"
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs", description="vLLM scheduling policy: fcfs, or priority (lower 'priority' value first)"
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="max running sequences (default: 256 on A100 profiles, 1024 on H100)"
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=1, description="token budget per step (default: 2048 on A100 profiles, 8192 on H100)"
    )
    num_gpu_blocks: int | None = Field(
        None, ge=1, description="KV cache blocks of 16 tokens (default: the profile's 80 GB capacity)"
    )
    max_model_len: int = Field(32768, ge=2, description="longest prompt + output accepted")
    prefix_caching: bool = Field(True, description="reuse KV blocks of shared prompt prefixes")
    enable_responses_store: bool = Field(
        False,
        description="store Responses API replies (previous_response_id, GET, cancel, background), as vLLM "
        "does with VLLM_ENABLE_RESPONSES_API_STORE=1; off by default, as in vLLM",
    )
    seed: int = Field(0, description="seed for generated text and output lengths")
    mean_output_tokens: int = Field(
        128, ge=1, description="mean output length when ignore_eos is not set (geometric distribution)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
