"""Fixtures that start real autellix processes on loopback and stop them after the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from autellix.launch import ServiceProcess, free_port
from tests.services import ServiceFactory, service_starter

SimEngineFactory = ServiceFactory


@pytest.fixture
def sim_engine_factory(tmp_path: Path) -> Iterator[SimEngineFactory]:
    """Start simulated engines with given flags; every one is stopped at teardown."""
    with service_starter(tmp_path, "sim-engine") as start:
        yield start


def metric_value(text: str, name: str, labels: Sequence[str] = ()) -> float:
    """The value of the first sample called ``name`` (whose label text holds every item of ``labels``)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric == name and all(label in head for label in labels):
            return float(value)
    raise KeyError(name)


# --- redis-server and proxy replicas (appended for the proxy's tests) --------------------------------


class RedisServer:
    """A ``redis-server`` process on a loopback port that tests may kill and start again."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*args, *extra], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start: {self.log_path.read_text(errors='replace')[-500:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def command(self, *parts: str) -> bytes:
        """One command over a raw socket (RESP), for test set-up that must not need an event loop."""
        payload = f"*{len(parts)}\r\n".encode() + b"".join(
            f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(payload)
            return sock.recv(65536)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port (no persistence); skipped if none is installed."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private ``redis-server`` processes (for tests that kill them); stopped at teardown."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path).start(*extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start ``autellix proxy`` replicas with given flags; every one is stopped at teardown."""
    with service_starter(tmp_path, "proxy") as start:
        yield start


# ----- sidecar (engine_adapters/sidecar.py) -------------------------------------------------------------

SidecarFactory = ServiceFactory


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Start ``autellix sidecar`` processes in front of an engine URL; every one is stopped at teardown.

    ``start(engine_url, *flags, config={...})``: ``config`` is written to a YAML file and passed with
    ``--config`` (for settings that have no flag, such as ``scheduler_params``).
    """
    with service_starter(tmp_path, "sidecar") as start:

        def sidecar(engine_url: str, *args: str, **options: Any) -> ServiceProcess:
            return start("--engine-url", engine_url, *args, **options)

        yield sidecar
