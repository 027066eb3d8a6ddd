"""A running stack (simulated engine, sidecar, proxy as real processes) whose /metrics the dashboards and
alerts are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port, start_sim_engine
from tests.deploy.promql import Exposition


@dataclass(frozen=True, slots=True)
class Scrape:
    """The /metrics pages of one proxy, one sidecar and one simulated engine after some traffic."""

    proxy: str
    sidecar: str
    engine: str

    def exposition(self) -> Exposition:
        exposition = Exposition()
        for text in (self.proxy, self.sidecar, self.engine):
            exposition.add(text)
        return exposition


def _service(name: str, subcommand: str, args: list[str], log_dir: Path) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        name=name,
        args=autellix_command(subcommand, ["--host", "127.0.0.1", "--port", str(port), *args]),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"{name}-{port}.log",
    )


def _traffic(proxy_url: str) -> None:
    """Calls that make every proxy family show samples: short and long calls, a stream, a program's end."""
    with httpx.Client(base_url=proxy_url, timeout=30) as client:
        created = client.post("/v1/programs", json={"id": "deploy-check"})
        assert created.status_code == 201, created.text
        headers = {"X-Program-Id": "deploy-check", "X-Program-Kind": "chat"}
        chat = {"model": "sim-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        assert client.post("/v1/chat/completions", json=chat, headers=headers).status_code == 200
        with client.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}, headers=headers
        ) as r:
            assert r.status_code == 200
            assert any("[DONE]" in line for line in r.iter_lines())
        # A long call (more than 2048 prompt tokens) pins the program to its engine.
        long_call = {"model": "sim-llama", "prompt": list(range(100, 2300)), "max_tokens": 2}
        assert client.post("/v1/completions", json=long_call, headers=headers).status_code == 200
        assert client.delete("/v1/programs/deploy-check").status_code == 200
        # the other generation APIs, as programs of one call each
        responses = {"model": "sim-llama", "input": "hello", "max_output_tokens": 4}
        assert client.post("/v1/responses", json={**responses, "store": False}).status_code == 200
        messages = {"model": "sim-llama", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/messages", json=messages).status_code == 200
        assert client.get("/v1/models").status_code == 200


@pytest.fixture(scope="session")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    log_dir = tmp_path_factory.mktemp("deploy-stack")
    engine = start_sim_engine(
        log_dir, ["--profile", "unit", "--time-scale", "0.01", "--scheduling-policy", "priority"]
    )
    started = [engine]
    try:
        sidecar = _service(
            "sidecar",
            "sidecar",
            ["--engine-url", engine.url, "--engine-kind", "sim", "--engine-priority", "on"],
            log_dir,
        )
        started.append(sidecar.start())
        proxy = _service("proxy", "proxy", ["--backend", f"sim-0={sidecar.url}"], log_dir)
        started.append(proxy.start())
        _traffic(proxy.url)
        yield Scrape(
            proxy=httpx.get(proxy.url + "/metrics", timeout=10).text,
            sidecar=httpx.get(sidecar.url + "/metrics", timeout=10).text,
            engine=httpx.get(engine.url + "/metrics", timeout=10).text,
        )
    finally:
        for service in reversed(started):
            service.stop()
