"""Settings of ``autellix demo``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    """What the demo runs; the defaults take a minute or two on a laptop-class machine."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_DEMO_", extra="forbid")

    profile: str = Field("a100-llama3-8b", description="step-time profile of the simulated engines")
    time_scale: float = Field(0.1, gt=0, description="wall seconds per simulated second for live engines")
    turns: int = Field(4, ge=1, le=50, description="turns of the live chat shown against the engine")
    output_tokens: int = Field(48, ge=1, le=4096, description="tokens per live reply")
    seed: int = Field(0, description="seed of everything random")
    out_dir: str = Field("results/demo", description="where the demo writes its JSON and plots")
