"""What the Deployment's preStop and terminationGracePeriodSeconds rely on: on SIGTERM the proxy stops
accepting connections, lets an in-flight stream finish, and exits 0."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port, start_sim_engine

pytestmark = pytest.mark.integration


def _start(name: str, subcommand: str, args: list[str], log_dir: Path) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        name=name,
        args=autellix_command(subcommand, ["--host", "127.0.0.1", "--port", str(port), *args]),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"{name}-{port}.log",
    ).start()


def test_sigterm_drains_an_in_flight_stream_and_refuses_new_connections(tmp_path: Path) -> None:
    started: list[ServiceProcess] = []
    try:
        # 150 output tokens at 10 ms a step: the stream lasts about 1.5 s.
        engine = start_sim_engine(tmp_path, ["--profile", "unit", "--time-scale", "0.01"])
        started.append(engine)
        sidecar = _start("sidecar", "sidecar", ["--engine-url", engine.url, "--engine-kind", "sim"], tmp_path)
        started.append(sidecar)
        proxy = _start("proxy", "proxy", ["--backend", f"sim-0={sidecar.url}"], tmp_path)
        started.append(proxy)
        assert proxy.process is not None
        body = {"model": "sim-llama", "prompt": "hi", "max_tokens": 150, "ignore_eos": True, "stream": True}
        lines: list[str] = []
        refused = False
        with httpx.stream("POST", proxy.url + "/v1/completions", json=body, timeout=30) as reply:
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) == 3:
                    os.kill(proxy.process.pid, signal.SIGTERM)
                    deadline = time.monotonic() + 2.0
                    while not refused and time.monotonic() < deadline:
                        try:
                            httpx.get(proxy.url + "/health", timeout=0.5)
                            time.sleep(0.02)
                        except httpx.ConnectError:
                            refused = True
        assert refused, "the proxy kept accepting connections after SIGTERM"
        assert lines[-1] == "data: [DONE]"
        assert sum(1 for line in lines if line.startswith("data: {")) == 150
        assert proxy.process.wait(timeout=10) == 0
    finally:
        for service in reversed(started):
            service.stop()
