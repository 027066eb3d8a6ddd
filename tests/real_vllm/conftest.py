"""Fixtures of the real-vLLM tier: tiny local models, real vLLM CPU servers, our services in front.

Run with the vLLM environment's interpreter (``scripts/test_real_vllm.sh`` does both steps)::

    bash scripts/setup_vllm.sh
    AUTELLIX_REAL_VLLM=1 ~/.cache/autellix/vllm-venv/bin/python -m pytest tests/real_vllm -m real_vllm

Every test here gets the ``real_vllm`` marker. Under an interpreter without vLLM (the project's own
.venv, which runs the whole suite) they are skipped with that reason; with ``AUTELLIX_REAL_VLLM=1`` a
missing vLLM is a usage error instead, so the tier's CI stage cannot pass by skipping.

Servers are expensive (~20-45 s to start, ~3.4 GB each), so one session-wide :class:`VllmPool` keeps them
and starts a server only when a test asks for its configuration; asking for a set of configurations
stops every other server first, so no more run at once than the current test needs (the machine is
shared). Each server runs in its own process group and is stopped by group (vLLM leaves an engine-core
and a worker process behind otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from autellix.launch import ServiceProcess, free_port
from tests.real_vllm.tiny_model import SMALL, TINY, TinyModelSpec, build_model
from tests.services import ServiceFactory, service_starter

REQUIRED_ENV = "AUTELLIX_REAL_VLLM"
MODELS_ENV = "AUTELLIX_REAL_VLLM_MODELS"
NICE_ENV = "AUTELLIX_REAL_VLLM_NICE"
HERE = Path(__file__).resolve().parent
VLLM_START_TIMEOUT = 300.0  # a cold start on a busy 2-core machine has been seen near 45 s
MAX_MODEL_LEN = 2048


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    for item in mine:
        item.add_marker(pytest.mark.real_vllm)
    if not mine or importlib.util.find_spec("vllm") is not None:
        return
    if os.environ.get(REQUIRED_ENV) == "1":
        raise pytest.UsageError(
            f"{REQUIRED_ENV}=1 but vLLM is not importable from {sys.executable}: run "
            "scripts/setup_vllm.sh and use that environment's python (scripts/test_real_vllm.sh does)"
        )
    skip = pytest.mark.skip(reason="needs vLLM's CPU build: run scripts/test_real_vllm.sh")
    for item in mine:
        item.add_marker(skip)


# ----- models -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Built models live in the vLLM environment (``sys.prefix``), so reinstalling it clears them."""
    return Path(os.environ.get(MODELS_ENV) or Path(sys.prefix) / "autellix-models")


# ----- vLLM servers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One vLLM server's model and flags; ``key`` names it in the pool and in log file names."""

    key: str
    model: TinyModelSpec
    max_num_seqs: int = 8
    policy: str = "fcfs"
    dev_mode: bool = False  # VLLM_SERVER_DEV_MODE=1: /server_info, where the scheduling policy shows
    max_model_len: int = MAX_MODEL_LEN
    extra: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # more of vLLM's environment variables

    @property
    def served_name(self) -> str:
        return self.model.name


# API surface, parity, plumbing: the ~150k-parameter model answers in milliseconds. No dev mode, as in
# production: /server_info is then a 404 and the sidecar cannot tell the policy. Responses are stored
# (previous_response_id, GET, cancel need it), as a deployment that serves the Responses API does.
RESPONSES_STORE = (("VLLM_ENABLE_RESPONSES_API_STORE", "1"),)
TINY_FCFS = ServerConfig("tiny-fcfs", TINY, env=RESPONSES_STORE)
TINY_FCFS_SPARE = ServerConfig("tiny-fcfs-spare", TINY, env=RESPONSES_STORE)
# Scheduling: the ~20M-parameter model spends milliseconds per token, one sequence at a time, so that
# calls queue and the admission order shows in the completion order.
SMALL_PRIORITY = ServerConfig(
    "small-priority",
    SMALL,
    max_num_seqs=1,
    policy="priority",
    dev_mode=True,
    max_model_len=SMALL.max_position_embeddings,  # room for calls that run until they are hung up
    extra=("--enable-per-request-metrics",),
)


@dataclass
class VllmServer:
    config: ServerConfig
    service: ServiceProcess
    started_in: float

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def model(self) -> str:
        return self.config.served_name

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=60).text


class VllmPool:
    """Running vLLM servers by configuration; :meth:`use` keeps exactly the ones a test needs."""

    def __init__(self, log_dir: Path, model_cache: Path) -> None:
        self.log_dir = log_dir
        self.model_cache = model_cache
        self.servers: dict[str, VllmServer] = {}

    def use(self, *configs: ServerConfig) -> list[VllmServer]:
        wanted = {config.key for config in configs}
        for key in [key for key in self.servers if key not in wanted]:
            self.servers.pop(key).service.stop(timeout=20)
        return [self._running(config) for config in configs]

    def _running(self, config: ServerConfig) -> VllmServer:
        server = self.servers.get(config.key)
        if server is not None and server.service.alive:
            return server
        if server is not None:
            server.service.stop()
        server = self._start(config)
        self.servers[config.key] = server
        return server

    def _start(self, config: ServerConfig) -> VllmServer:
        model_dir = build_model(config.model, self.model_cache)
        port = free_port()
        # Niced: while it decodes, vLLM's engine core and worker keep both cores busy, and the sidecar
        # and the test client then wait seconds for a time slice; this way they come first (and so do
        # the other developers' processes on this shared machine).
        args = [
            "nice", "-n", os.environ.get(NICE_ENV, "10"),
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", config.served_name,
            "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", str(config.max_model_len),
            "--max-num-seqs", str(config.max_num_seqs), "--scheduling-policy", config.policy,
            "--enable-prompt-tokens-details", "--enforce-eager", *config.extra,
        ]  # fmt: skip
        env = {
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for these models, small for the host
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        if config.dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        env.update(config.env)
        service = ServiceProcess(
            name=f"vllm-{config.key}",
            args=args,
            url=f"http://127.0.0.1:{port}",
            log_path=self.log_dir / f"vllm-{config.key}-{port}.log",
            env=env,
        )
        started = time.monotonic()
        service.start(timeout=VLLM_START_TIMEOUT)
        took = time.monotonic() - started
        print(f"\n[real_vllm] {config.key} up in {took:.1f}s at {service.url}", flush=True)
        return VllmServer(config, service, took)

    def close(self) -> None:
        for server in self.servers.values():
            server.service.stop(timeout=20)
        self.servers.clear()


@pytest.fixture(scope="session")
def vllm_pool(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[VllmPool]:
    pool = VllmPool(tmp_path_factory.mktemp("vllm-logs"), model_cache)
    yield pool
    pool.close()


@pytest.fixture
def tiny_vllm(vllm_pool: VllmPool) -> VllmServer:
    """The tiny model on an FCFS server (no dev mode)."""
    return vllm_pool.use(TINY_FCFS)[0]


@pytest.fixture
def small_priority_vllm(vllm_pool: VllmPool) -> VllmServer:
    """The small model on a priority-policy server with one running sequence (dev mode on)."""
    return vllm_pool.use(SMALL_PRIORITY)[0]


# ----- our services, as real processes under this interpreter --------------------------------------------


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """``autellix sidecar --engine-kind vllm`` in front of an engine URL; stopped at teardown.

    ``start(engine_url, *flags, config={...})``: ``config`` goes to a YAML file passed with ``--config``.
    """
    with service_starter(tmp_path, "sidecar", timeout=60) as start:

        def sidecar(engine_url: str, *args: str, **options: Any) -> ServiceProcess:
            return start("--engine-url", engine_url, "--engine-kind", "vllm", *args, **options)

        yield sidecar


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """``autellix proxy`` with given flags (``--backend ...``); stopped at teardown."""
    with service_starter(tmp_path, "proxy", timeout=60) as start:
        yield start


@pytest.fixture
def sim_engine_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """``autellix sim-engine`` with given flags; stopped at teardown."""
    with service_starter(tmp_path, "sim-engine", timeout=60) as start:
        yield start


# ----- helpers ------------------------------------------------------------------------------------------


def metric_value(text: str, name: str, labels: tuple[str, ...] = ()) -> float:
    """Sum of the samples called ``name`` whose label text holds every item of ``labels``."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] == name and all(label in head for label in labels):
            total = (total or 0.0) + float(value)
    if total is None:
        raise KeyError(name)
    return total


def metric_names(text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}
