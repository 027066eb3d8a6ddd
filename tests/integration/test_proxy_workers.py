"""``autellix proxy --workers 2`` with real processes: two workers on one port over one Redis table,
in front of a sidecar and a simulated engine. Both workers serve, a program's calls over many
connections land in one program record, SIGTERM to the parent stops them all, and a worker that dies
takes the parent down with status 1 (workers.py rule 3)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port
from tests.integration.conftest import RedisServer, SidecarFactory, SimEngineFactory
from tests.integration.test_proxy_auth import wait_ready
from tests.polling import wait_until

pytestmark = pytest.mark.integration

BODY = {
    "model": "sim-llama",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 2,
    "ignore_eos": True,
}


def fresh(url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own (the kernel picks a worker per connection)."""
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.request(method, path, **kwargs)  # type: ignore[arg-type]


def workers_seen(url: str, count: int = 2, timeout: float = 20.0) -> dict[int, str]:
    """pid → replica id of the workers that answered ``/health`` on fresh connections, until ``count``."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        body = fresh(url, "GET", "/health").json()
        seen[body["pid"]] = body["replica"]
    assert len(seen) == count, seen
    return seen


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_two_workers_share_one_port_and_one_table(
    sim_engine_factory: SimEngineFactory,
    sidecar_factory: SidecarFactory,
    proxy_factory: Callable[..., ServiceProcess],
    redis_server: RedisServer,
) -> None:
    engine = sim_engine_factory("--profile", "unit", "--time-scale", "0.01")
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim")
    proxy = proxy_factory(
        "--backend", f"e0={sidecar.url}", "--workers", "2", "--redis-url", redis_server.url,
        "--redis-key-prefix", f"workers-{redis_server.port}", "--replica-id", "pod-a",
        "--health-check-interval", "0.2",
    )  # fmt: skip
    wait_ready(proxy.url)
    seen = workers_seen(proxy.url)
    assert sorted(seen.values()) == ["pod-a-0", "pod-a-1"]
    assert proxy.process is not None and proxy.process.pid not in seen  # the parent binds nothing
    assert fresh(proxy.url, "POST", "/v1/programs", json={"id": "shared"}).status_code == 201
    for _ in range(12):
        reply = fresh(
            proxy.url, "POST", "/v1/chat/completions", json=BODY, headers={"X-Program-Id": "shared"}
        )
        assert reply.status_code == 200, reply.text
    states = [fresh(proxy.url, "GET", "/v1/programs/shared").json() for _ in range(6)]
    assert {state["calls_completed"] for state in states} == {12}  # one record, whichever worker reads it
    keys = redis_server.command("KEYS", f"workers-{redis_server.port}:prog:*").decode()
    assert keys.count("{shared}") == 1

    os.kill(proxy.process.pid, signal.SIGTERM)  # the parent only: it stops the workers
    assert proxy.process.wait(timeout=30) == 0
    assert wait_until(lambda: all(gone(pid) for pid in seen), timeout=10)


def test_a_dead_worker_stops_the_proxy_with_status_1(tmp_path: Path, redis_server: RedisServer) -> None:
    port = free_port()
    proxy = ServiceProcess(
        name="proxy-workers",
        args=autellix_command(
            "proxy",
            [
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend",
                "http://127.0.0.1:9",
                "--workers",
                "2",
                "--redis-url",
                redis_server.url,
                "--redis-key-prefix",
                f"dead-{redis_server.port}",
            ],
        ),
        url=f"http://127.0.0.1:{port}",
        log_path=tmp_path / "proxy.log",
    ).start()
    try:
        pids = set(workers_seen(proxy.url))
        victim, other = sorted(pids)
        os.kill(victim, signal.SIGKILL)
        assert proxy.process is not None and proxy.process.wait(timeout=30) == 1
        assert wait_until(lambda: gone(other), timeout=10)
        assert "exited with status -9" in proxy.log_path.read_text()
    finally:
        proxy.stop()
