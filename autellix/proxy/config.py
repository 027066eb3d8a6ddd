"""Settings of ``autellix proxy`` (flags, ``AUTELLIX_*`` environment, YAML; see autellix/settings.py).

Light on purpose: the CLI imports this module to build ``--help``. Backends are given as ``URL`` or
``ID=URL`` (``--backend`` repeated, or a YAML list); the id names the engine in the program table, the
metrics and the pins, so every replica must be given the same ids (the default id is the URL itself).

API keys (rules in auth.py): ``--api-key`` (repeatable; ``AUTELLIX_API_KEY=k1,k2`` or a JSON list in
the environment, a string or list in YAML) and ``--api-key-file`` (one key per line) add up; the file
is read here once so that a missing or empty file stops the start-up, and again by the app while it
runs. The key fields are left out of ``repr`` so that no log of the settings shows a key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from autellix.auth import key_file_setting, optional_key, parse_key_list, read_key_file


def parse_backend(spec: str) -> tuple[str, str]:
    """``"URL"`` or ``"ID=URL"`` → ``(id, url)``; the URL must be http(s) and loses a trailing slash."""
    spec = spec.strip()
    engine_id, sep, url = spec.partition("=")
    if not sep or "://" in engine_id:
        engine_id, url = "", spec
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ValueError(f"backend {spec!r}: the URL must start with http:// or https://")
    engine_id = engine_id or url
    if not engine_id.isprintable() or len(engine_id) > 256:
        raise ValueError(f"backend {spec!r}: the id must be printable and at most 256 characters")
    return engine_id, url


class ProxySettings(BaseSettings):
    """The front proxy: backends, program table, routing, limits, health checks and retries."""

    model_config = SettingsConfigDict(env_prefix="AUTELLIX_", extra="forbid")

    backend: list[str] = Field(
        default_factory=list,
        validate_default=True,
        description="an engine or sidecar to forward to, as URL or ID=URL (at least one, or a --backend-dns)",
    )
    backend_dns: list[str] = Field(
        default_factory=list,
        description="NAME:PORT of a headless Service (repeatable): every A/AAAA record is a backend "
        "named ADDRESS:PORT, re-resolved every --dns-interval seconds, added and removed without a restart",
    )
    dns_interval: float = Field(5.0, gt=0, description="seconds between resolutions of --backend-dns names")
    dns_nameserver: str | None = Field(
        None, description="HOST[:PORT] of the DNS server to ask (default: the system's, /etc/resolv.conf)"
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for the shared program table (redis://, rediss:// or unix://); "
        "none: an in-memory table local to this process",
    )
    redis_cluster: bool = Field(False, description="the Redis URL points at a Redis Cluster")
    redis_key_prefix: str = Field("autellix", description="prefix of every Redis key of the program table")
    redis_timeout: float = Field(
        0.5, gt=0, description="seconds before a Redis operation counts as failed (then: degraded mode)"
    )
    replica_id: str | None = Field(
        None, description="this replica's id for leases in Redis (default: random per process)"
    )
    starts_ahead: bool = Field(
        True,
        description="with Redis, forward a call before Redis answers its start when this replica wrote "
        "every change of the program it knows of (one Redis round trip off each call; a context that "
        "another replica made stale is caught on the reply, and that program then waits for Redis)",
    )
    lease_ttl: float = Field(
        15.0,
        gt=0,
        description="seconds a crashed replica's calls stay counted in Redis before any "
        "replica's gc releases them",
    )
    program_kinds: list[str] = Field(
        ["chat", "tool-use", "tree-search", "map-reduce", "coding-agent", "research"],
        description="program kinds a client may name (X-Program-Kind, metadata.program_kind) for the "
        "program-level metrics' kind label; any other is 'other', none 'unspecified'",
    )
    router: str = Field("autellix", description="routing policy by name (see autellix.proxy.routing)")
    router_params: dict[str, Any] | None = Field(
        None, description="the router's parameters (YAML mapping or JSON), e.g. {short_call_max_tokens: 2048}"
    )
    router_weights: dict[str, float] | None = Field(None, description="the router's scorer weights")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="processes serving the port together (SO_REUSEPORT; the kernel spreads connections); "
        "more than 1 needs --redis-url, the table they share",
    )
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8080, ge=0, le=65535, description="port to bind (0 picks a free one)")
    program_ttl: float = Field(600.0, gt=0, description="seconds of inactivity after which a program expires")
    stuck_ttl: float = Field(
        3600.0,
        gt=0,
        description="seconds without activity after which a program with calls in flight expires",
    )
    gc_interval: float = Field(5.0, gt=0, description="seconds between program-table garbage collections")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)"
    )
    health_check_interval: float = Field(2.0, gt=0, description="seconds between backend health checks")
    health_check_timeout: float = Field(1.0, gt=0, description="seconds a health check may take")
    health_failure_threshold: int = Field(
        3,
        ge=1,
        description="consecutive failed health checks (or calls that cannot connect) before a backend "
        "leaves the pool",
    )
    health_success_threshold: int = Field(
        2, ge=1, description="consecutive passing health checks before a backend that left the pool returns"
    )
    retries: int = Field(
        2, ge=0, description="retries on another backend for a call that fails before its first byte"
    )
    retry_backoff: float = Field(0.05, ge=0, description="seconds before the first retry (doubling after)")
    connect_timeout: float = Field(2.0, gt=0, description="seconds to connect to a backend")
    read_timeout: float = Field(600.0, gt=0, description="seconds a backend may stay silent mid-call")
    max_queued_per_key: int = Field(
        1024,
        ge=0,
        description="calls one API key (or, without keys, all clients) may have in progress on this "
        "replica; past it a 429 with Retry-After (0: unbounded)",
    )
    max_queued_per_engine: int = Field(
        2048,
        ge=0,
        description="calls this replica may have in progress on one backend; a full backend is left out "
        "of routing, all full: a 429 with Retry-After (0: unbounded)",
    )
    retry_after: float = Field(1.0, gt=0, description="seconds a 429 of these bounds asks clients to wait")
    max_call_seconds: float = Field(
        3600.0,
        ge=0,
        description="deadline of every call and cap of a client's X-Request-Timeout header (seconds): "
        "past it a call still waiting is a 504, a stream is cut with an error event (0: no deadline "
        "but the client's)",
    )
    ready_requires_table: bool = Field(
        True, description="GET /ready fails while Redis is unreachable (off: ready whenever a backend is)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="a key clients must send as 'Authorization: Bearer KEY' (any listed key is accepted, "
        "for rotation; env AUTELLIX_API_KEY=k1,k2); none here and no --api-key-file: no authentication",
    )
    api_key_file: str | None = Field(
        None,
        description="file of accepted keys, one per line (# comments), added to --api-key and re-read "
        "every few seconds (a Kubernetes Secret mounted as a file rotates without a restart)",
    )
    backend_api_key: str | None = Field(
        None,
        repr=False,
        description="key sent to every backend as 'Authorization: Bearer KEY' in place of the client's "
        "(for sidecars or engines started with an API key)",
    )

    program_id_secret: str | None = Field(
        None,
        repr=False,
        min_length=16,
        description="secret of the HMAC tag that POST /v1/programs adds to the ids it returns (every "
        "replica needs the same); none and no file: ids are not signed, unless --require-signed-ids "
        "(then a random secret per process)",
    )
    program_id_secret_file: str | None = Field(
        None, description="file holding --program-id-secret (a mounted Secret; at least 16 bytes)"
    )
    require_signed_ids: bool = Field(
        False,
        description="reject a program id that POST /v1/programs did not sign (403): no client can name "
        "a program it was not given",
    )

    _api_keys = field_validator("api_key", mode="before")(staticmethod(parse_key_list))
    _api_key_file = field_validator("api_key_file", mode="before")(staticmethod(key_file_setting))
    _backend_api_key = field_validator("backend_api_key", mode="before")(staticmethod(optional_key))

    @field_validator("backend_dns")
    @classmethod
    def _backend_dns(cls, values: list[str]) -> list[str]:
        from autellix.proxy.discovery import parse_dns_target

        targets = [parse_dns_target(value) for value in values]
        if len(set(targets)) != len(targets):
            raise ValueError("every NAME:PORT may be given once")
        return values

    @field_validator("backend")
    @classmethod
    def _backends(cls, values: list[str]) -> list[str]:
        ids = [parse_backend(value)[0] for value in values]
        duplicates = sorted({engine_id for engine_id in ids if ids.count(engine_id) > 1})
        if duplicates:
            raise ValueError(f"backend ids must be unique, repeated: {', '.join(duplicates)}")
        return values

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or "{" in value or "}" in value:
            raise ValueError("must be non-empty and contain no braces")
        return value

    @field_validator("program_id_secret_file")
    @classmethod
    def _secret_file(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        from autellix.proxy.tenants import read_secret_file

        read_secret_file(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProxySettings:
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                f"--workers {self.workers} needs --redis-url: workers are separate processes and share "
                "programs only through a Redis program table"
            )
        if self.program_id_secret is not None and self.program_id_secret_file is not None:
            raise ValueError("give --program-id-secret or --program-id-secret-file, not both")
        if not self.backend and not self.backend_dns:
            raise ValueError(
                "no backend: give --backend URL (repeatable), --backend-dns NAME:PORT or a 'backend' list "
                "in --config"
            )
        if self.stuck_ttl < self.program_ttl:
            raise ValueError(f"stuck_ttl ({self.stuck_ttl}) must be >= program_ttl ({self.program_ttl})")
        self.router_config()  # an unknown router, parameter or weight: one clear line
        return self

    def api_keys(self) -> tuple[str, ...]:
        """Every accepted key: the listed ones, then the key file's (read now)."""
        from_file = read_key_file(self.api_key_file) if self.api_key_file is not None else ()
        return (*self.api_key, *from_file)

    def limit_settings(self) -> Any:
        from autellix.proxy.limits import LimitSettings

        return LimitSettings(
            self.max_queued_per_key, self.max_queued_per_engine, self.retry_after, self.max_call_seconds
        )

    def backends(self) -> list[tuple[str, str]]:
        return [parse_backend(value) for value in self.backend]

    def dns_targets(self) -> list[tuple[str, int]]:
        from autellix.proxy.discovery import parse_dns_target

        return [parse_dns_target(value) for value in self.backend_dns]

    def router_config(self) -> Any:
        from autellix.proxy.routing import RouterConfig, get_router

        config = RouterConfig.parse(
            {"name": self.router, "params": self.router_params or {}, "weights": self.router_weights or {}}
        )
        get_router(config)
        return config
