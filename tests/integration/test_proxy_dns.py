"""``--backend-dns`` under load with real processes: a proxy that asks a real (tiny) DNS server on
loopback for a headless Service's addresses, in front of simulated engines on two loopback addresses
sharing one port, while clients keep calling. A backend added to the answer gets calls within two
intervals; a removed one gets no new call, its calls in flight finish, and no call fails."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port
from tests.dns_server import DnsServer
from tests.integration.test_proxy_auth import wait_ready
from tests.polling import wait_until

pytestmark = pytest.mark.integration

NAME = "engines.autellix.test"
INTERVAL = 1.0
CLIENTS = 4
BODY = {
    "model": "sim-llama",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 48,  # about a second of decoding on the simulated A100 in real time
    "ignore_eos": True,
}


def routed(proxy: ServiceProcess, engine: str) -> float:
    """Calls the proxy has routed to ``engine`` (its routing decisions, every reason)."""
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("autellix_proxy_routing_decisions_total{") and f'engine="{engine}"' in line:
            total += float(line.rpartition(" ")[2])
    return total


def in_flight(proxy: ServiceProcess, engine: str) -> float:
    for line in httpx.get(proxy.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(f'autellix_proxy_calls_in_flight{{engine="{engine}"}}'):
            return float(line.rpartition(" ")[2])
    return 0.0


class Load:
    """``CLIENTS`` threads calling the proxy back to back until stopped; every status is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    reply = http.post("/v1/chat/completions", json=BODY)
                    self.statuses.append(reply.status_code)
                    if reply.status_code != 200:
                        self.errors.append(reply.text[:300])
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[int, list[ServiceProcess]]]:
    """Simulated engines on 127.0.0.2 and 127.0.0.3, one port (as the pods behind a headless Service)."""
    port = free_port("127.0.0.2")
    started = []
    for host in ("127.0.0.2", "127.0.0.3"):
        service = ServiceProcess(
            name=f"sim-{host}",
            args=autellix_command("sim-engine", ["--host", host, "--port", str(port), "--time-scale", "1.0"]),
            url=f"http://{host}:{port}",
            log_path=tmp_path / f"sim-{host}.log",
        )
        started.append(service.start())
    yield port, started
    for service in started:
        service.stop()


def test_backends_follow_the_dns_answer_under_load(
    engines: tuple[int, list[ServiceProcess]], proxy_factory: Callable[..., ServiceProcess]
) -> None:
    port, _ = engines
    first, second = f"127.0.0.2:{port}", f"127.0.0.3:{port}"
    with DnsServer() as dns:
        dns.answer(NAME, ["127.0.0.2"])
        proxy = proxy_factory(
            "--backend-dns", f"{NAME}:{port}", "--dns-nameserver", dns.address,
            "--dns-interval", str(INTERVAL), "--health-check-interval", "0.2",
        )  # fmt: skip
        wait_ready(proxy.url)
        listed = httpx.get(proxy.url + "/admin/backends", timeout=5).json()["data"]
        assert [(b["name"], b["source"]) for b in listed] == [(first, f"dns:{NAME}:{port}")]
        with Load(proxy.url) as load:
            assert wait_until(lambda: routed(proxy, first) >= CLIENTS, timeout=15)
            dns.answer(NAME, ["127.0.0.2", "127.0.0.3"])
            added_at = time.monotonic()
            assert wait_until(lambda: routed(proxy, second) > 0, timeout=2 * INTERVAL + 5)
            took = time.monotonic() - added_at
            assert took <= 2 * INTERVAL, f"the added backend took {took:.2f} s to get a call"
            assert wait_until(lambda: in_flight(proxy, first) > 0, timeout=10)
            dns.answer(NAME, ["127.0.0.3"])  # the first leaves with calls in flight
            gone = wait_until(
                lambda: (
                    first not in {b["name"] for b in httpx.get(proxy.url + "/admin/backends").json()["data"]}
                ),
                timeout=2 * INTERVAL + 5,
                interval=0.01,
            )
            assert gone
            routed_before = routed(proxy, first)
            removal = re.search(
                rf"backend {re.escape(first)} removed \(.*, (\d+) call\(s\) in flight", proxy.log_tail(200)
            )
            assert removal is not None and int(removal.group(1)) > 0  # it left with calls in flight
            assert wait_until(lambda: in_flight(proxy, first) == 0, timeout=15)
            served_after = routed(proxy, second)
            assert wait_until(lambda: routed(proxy, second) >= served_after + 2 * CLIENTS, timeout=15)
            assert routed(proxy, first) == routed_before  # no new call on the removed backend
        assert load.errors == [] and set(load.statuses) == {200}
        assert len(load.statuses) >= 4 * CLIENTS
