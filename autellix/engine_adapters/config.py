"""Settings of ``autellix sidecar`` (flags, ``AUTELLIX_*`` environment, YAML; see autellix/settings.py).

Light on purpose: the CLI imports this module to build ``--help``; the queue and window classes are
imported only by the validators, when settings are actually loaded.

API keys follow the proxy's rules (autellix/auth.py): ``--api-key`` / ``--api-key-file`` make the
sidecar accept only callers that present a key (the proxy, with its ``--backend-api-key``), and
``--engine-api-key`` is what the sidecar presents to an engine started with ``--api-key``. On a
non-loopback ``--host`` a key is required unless ``--insecure-no-auth`` (auth.py rule 8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from autellix.auth import (
    is_loopback_host,
    key_file_setting,
    optional_key,
    parse_key_list,
    read_key_file,
)

if TYPE_CHECKING:
    from autellix.engine_adapters.admission import WindowParams
    from autellix.engine_adapters.scheduler import PreemptParams
    from autellix.engine_adapters.scheduling.working_set import WorkingSetParams


class SidecarSettings(BaseSettings):
    """One engine's sidecar: where the engine is, which queue policy orders it, how admission adapts."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_", extra="forbid")

    engine_url: str = Field("http://127.0.0.1:8000", description="base URL of the engine this sidecar fronts")
    engine_kind: str = Field(
        "vllm",
        description="engine adapter: vllm, sglang or sim (a module autellix/engine_adapters/<kind>.py)",
    )
    scheduler: Literal["plas", "atlas", "mlfq", "fcfs"] = Field(
        "plas",
        description="local queue policy: plas (single-threaded programs: the program's summed service), "
        "atlas (multi-threaded: the program's critical path), mlfq, or fcfs",
    )
    scheduler_params: dict[str, Any] | None = Field(
        None,
        description="queue policy parameters (YAML mapping or JSON in the environment), e.g. "
        "{boundaries: [0, 0.5, 1, 2], beta: 10, service_floor: 0.1}",
    )
    working_set: Literal["off", "las", "fifo"] = Field(
        "las",
        description="KV working-set gate: let a new program's calls in only while the resident programs' "
        "histories fit the engine's KV cache (las: least-served program first, fifo: oldest first); off: "
        "no gate (scheduling/working_set.py). Open while the cache size is unknown",
    )
    working_set_params: dict[str, Any] | None = Field(
        None,
        description="working-set gate parameters (YAML mapping or JSON), e.g. {residency_quantum: 16, "
        "headroom: 0.05, ttl_default: 2, ttl_max: 60}",
    )
    kv_budget: bool = Field(
        True,
        description="admit a call only while its prompt + max_tokens fit the engine's KV cache beside the "
        "calls already in it (needs the cache size: vLLM's cache_config_info, or --kv-capacity-tokens)",
    )
    kv_capacity_tokens: int | None = Field(
        None, ge=1, description="the engine's KV cache size in tokens (default: as the engine reports it)"
    )
    kv_headroom: float = Field(
        0.05, ge=0, lt=1, description="fraction of the KV cache the budget leaves free"
    )
    default_output_reserve: int = Field(
        512, ge=1, description="output tokens counted for a call that sets no max_tokens"
    )
    max_output_reserve: int = Field(
        4096,
        ge=1,
        description="the most output tokens a call's max_tokens counts in the KV budget (clients often "
        "ask for far more than they get)",
    )
    preempt: bool = Field(
        False,
        description="abort-and-resume preemption: when a much better call waits and the engine is full, "
        "stop a running streamed call (close its engine connection) and resume it later from its prompt + "
        "the tokens it generated, in one uninterrupted client stream (engine_adapters/resume.py); vllm and "
        "sim engines only (SGLang preempts by itself: run it with --enable-priority-scheduling)",
    )
    preempt_params: dict[str, Any] | None = Field(
        None,
        description="abort-and-resume parameters (YAML mapping or JSON), e.g. {level_gap: 2, min_run: 2, "
        "min_remaining: 32, max_preemptions: 3} (scheduler.py rule 5)",
    )
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8100, ge=0, le=65535, description="port to bind (0 picks a free one)")
    max_in_flight: int = Field(
        256, ge=1, description="most calls in the engine at once (the admission window's upper bound)"
    )
    window_mode: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="adaptive: size the window from the engine's running/waiting counts; "
        "fixed: always --max-in-flight",
    )
    initial_window: int = Field(8, ge=1, description="adaptive window's size before the first probe")
    min_window: int = Field(1, ge=1, description="adaptive window's lower bound")
    overprovision: int = Field(
        2, ge=0, description="calls kept ready in the engine's queue behind a full batch"
    )
    congestion_probes: int = Field(
        2, ge=1, description="consecutive probes showing engine queueing before the window shrinks"
    )
    kv_high_watermark: float = Field(
        0.95, gt=0, le=1, description="KV-cache usage above which the window stops growing"
    )
    probe_interval: float = Field(0.1, gt=0, description="seconds between engine load probes")
    probe_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds one load probe may take (default: max(1, 5 x probe_interval)); raise it when "
        "the engine's /metrics answers slowly (vLLM on a busy CPU host: seconds), or the window holds",
    )
    tick_interval: float = Field(
        0.05, gt=0, description="seconds between timer ticks (beta promotion, service accounting)"
    )
    engine_priority: Literal["auto", "on", "off"] = Field(
        "auto",
        description="send the engine a 'priority' field: on, off, or auto (only if the engine says it "
        "runs a priority policy; never to an FCFS engine)",
    )
    sglang_low_priority_values_first: bool | None = Field(
        None,
        description="SGLang only: the server runs --schedule-low-priority-values-first (default: "
        "detected, else SGLang's default, higher first)",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest request body accepted")
    max_queued: int = Field(
        2048,
        ge=0,
        description="calls that may wait in the local queue; past it a 429 with Retry-After, which the "
        "proxy tries on another engine (0: unbounded)",
    )
    retry_after: float = Field(1.0, gt=0, description="seconds a queue-full 429 asks the caller to wait")
    max_call_seconds: float = Field(
        3600.0,
        ge=0,
        description="deadline of every call and cap of the caller's X-Request-Timeout header (seconds): "
        "a call still queued past it is a 504, a stream is cut with an error event (0: no deadline but "
        "the caller's)",
    )
    connect_timeout: float = Field(5.0, gt=0, description="seconds to wait for a connection to the engine")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="a key callers (the proxy's --backend-api-key) must send as 'Authorization: Bearer KEY' "
        "(any listed key is accepted; env AUTELLIX_API_KEY=k1,k2); none: no authentication",
    )
    api_key_file: str | None = Field(
        None,
        description="file of accepted keys, one per line (# comments), added to --api-key and re-read "
        "every few seconds",
    )
    engine_api_key: str | None = Field(
        None,
        repr=False,
        description="key sent to the engine as 'Authorization: Bearer KEY' on every request (calls, load "
        "probes, server info) in place of the caller's (vLLM/SGLang started with --api-key)",
    )

    insecure_no_auth: bool = Field(
        False,
        description="start on a non-loopback --host without --api-key or --api-key-file (anyone who can "
        "reach the port then bypasses the proxy's program-level priorities; autellix/auth.py rule 8)",
    )

    _api_keys = field_validator("api_key", mode="before")(staticmethod(parse_key_list))
    _api_key_file = field_validator("api_key_file", mode="before")(staticmethod(key_file_setting))
    _engine_api_key = field_validator("engine_api_key", mode="before")(staticmethod(optional_key))

    @field_validator("engine_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("engine_kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from autellix.engine_adapters.base import adapter_class

        adapter_class(value)
        return value

    @field_validator("scheduler_params")
    @classmethod
    def _valid_params(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        from autellix.engine_adapters.scheduling import get_policy

        scheduler = info.data.get("scheduler")
        if scheduler is not None:
            get_policy(scheduler, value)  # unknown keys / bad values: one clear line naming them
        return value

    @field_validator("working_set_params")
    @classmethod
    def _valid_working_set(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from autellix.engine_adapters.scheduling import build_params
        from autellix.engine_adapters.scheduling.working_set import WorkingSetParams

        build_params(WorkingSetParams, value, what="working_set_params")
        return value

    @field_validator("preempt_params")
    @classmethod
    def _valid_preempt(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from autellix.engine_adapters.scheduler import PreemptParams
        from autellix.engine_adapters.scheduling import build_params

        build_params(PreemptParams, value, what="preempt_params")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SidecarSettings:
        self.window_params()
        if self.preempt:
            from autellix.engine_adapters.base import adapter_class

            if not adapter_class(self.engine_kind).supports_resume:
                raise ValueError(
                    f"preempt: the {self.engine_kind} adapter cannot stop and resume calls (abort-and-resume "
                    "needs token-id prompts and return_token_ids: vllm or sim); SGLang preempts running "
                    "calls natively: leave preempt off, start SGLang with --enable-priority-scheduling "
                    "and a low --priority-scheduling-preemption-threshold, and send priorities "
                    "(--engine-priority)"
                )
        keyless = not self.api_key and self.api_key_file is None
        if keyless and not self.insecure_no_auth and not is_loopback_host(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines and no api_key or api_key_file is "
                "set: give the sidecar the key the proxy sends (--backend-api-key) as --api-key, or pass "
                "--insecure-no-auth"
            )
        return self

    def working_set_gate_params(self) -> WorkingSetParams | None:
        """The gate's parameters, or None when ``--working-set off``."""
        if self.working_set == "off":
            return None
        from autellix.engine_adapters.scheduling import build_params
        from autellix.engine_adapters.scheduling.working_set import WorkingSetParams

        values = {**(self.working_set_params or {}), "order": self.working_set}
        params: WorkingSetParams = build_params(WorkingSetParams, values, what="working_set_params")
        return params

    def preempt_settings(self) -> PreemptParams | None:
        """Abort-and-resume's parameters, or None when ``--preempt`` is off."""
        if not self.preempt:
            return None
        from autellix.engine_adapters.scheduler import PreemptParams
        from autellix.engine_adapters.scheduling import build_params

        params: PreemptParams = build_params(PreemptParams, self.preempt_params, what="preempt_params")
        return params

    def api_keys(self) -> tuple[str, ...]:
        """Every key a caller may present: the listed ones, then the key file's (read now)."""
        from_file = read_key_file(self.api_key_file) if self.api_key_file is not None else ()
        return (*self.api_key, *from_file)

    def window_params(self) -> WindowParams:
        """The admission window's parameters."""
        from autellix.engine_adapters.admission import WindowParams

        return WindowParams(
            initial=min(max(self.initial_window, self.min_window), self.max_in_flight),
            minimum=min(self.min_window, self.max_in_flight),
            maximum=self.max_in_flight,
            overprovision=self.overprovision,
            adaptive=self.window_mode == "adaptive",
            congestion_probes=self.congestion_probes,
            kv_high_watermark=self.kv_high_watermark,
        )
