"""Scheduling through the sidecar against a real vLLM whose engine is the bottleneck.

The server runs the ~20M-parameter model with ``--max-num-seqs 1`` and ``--scheduling-policy priority``
(dev mode on, so ``/server_info`` shows the policy) and ``--enable-per-request-metrics``: one call
decodes at a time, a few milliseconds per token, so calls queue.

Each scenario fills the engine with an endless call, queues calls behind it one by one (each seen by
the sidecar before the next is sent), then hangs the endless call up, which frees the engine at a moment
the test chooses, and reads the order in which vLLM started the others (their first tokens). Nothing
depends on how fast the shared machine decodes at the time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from autellix.engine_adapters import protocol
from autellix.engine_adapters.vllm import VllmAdapter
from tests.polling import wait_until
from tests.real_vllm.conftest import VllmServer, metric_value
from tests.services import ServiceFactory

pytestmark = pytest.mark.real_vllm

# A call that runs until its client hangs up: minutes at the pace seen here (~130 tokens/s). At 4,000
# tokens a CI machine that decoded faster ended calls before the test's turn.
ENDLESS = 16000
ATTEMPTS = 6  # a scenario spoiled by the shared machine (a call ended before its turn) is run again


def program(program_id: str, service: float = 0.0) -> dict[str, str]:
    return {
        protocol.PROGRAM_ID: program_id,
        protocol.PROGRAM_SERVICE: str(service),
        protocol.PROGRAM_CRITICAL_PATH: str(service),
    }


LONG = program("long", service=5.0)  # a program that already used 5 s of engine time
SHORT = program("short")


class StreamedCall(threading.Thread):
    """One streamed completion through the sidecar, in a thread: records when its first token arrived,
    and hangs up (closing the connection, which aborts the call) when ``hang_up`` is set."""

    def __init__(self, url: str, body: dict[str, object], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.headers = url, body, headers
        self.first_token = threading.Event()
        self.hang_up = threading.Event()
        self.first_at: float | None = None
        self.status: int | None = None

    def run(self) -> None:
        # A client of its own: threads sharing one connection pool have been seen to hold each other up.
        with (
            httpx.Client(timeout=120) as http,
            http.stream("POST", self.url, json=self.body, headers=self.headers) as reply,
        ):
            self.status = reply.status_code
            for line in reply.iter_lines():
                if self.first_at is None and line.startswith("data: {"):
                    self.first_at = time.monotonic()
                    self.first_token.set()
                if self.hang_up.is_set():
                    break


class Spoiled(Exception):
    """A call ended on its own before the test hung it up: the machine was too slow for the scenario."""


class Scenario:
    """Endless streamed calls to one sidecar, started one by one, each seen by the sidecar before the
    next is sent; then :meth:`advance` hangs up the call that runs and sees which one vLLM starts next.

    Only start *events* are compared, never timestamps: on this shared 2-core machine a test process can
    stall for hundreds of milliseconds, so client-side times do not order calls reliably. With one
    sequence in vLLM and every call endless, exactly one call runs until the test hangs it up. Rarely,
    under heavy load, a request has taken longer to reach the sidecar than an endless call lasts; that
    is :class:`Spoiled`, and :func:`attempt` runs the scenario again.
    """

    def __init__(self, sidecar_url: str, server: VllmServer) -> None:
        self.sidecar_url, self.server = sidecar_url, server
        self.calls: dict[str, StreamedCall] = {}
        self.order: list[str] = []

    def start(self, name: str, headers: dict[str, str]) -> StreamedCall:
        body: dict[str, object] = {
            "model": self.server.model,
            "prompt": f"{name} says",
            "max_tokens": ENDLESS,
            "ignore_eos": True,
            "stream": True,
        }
        print(f"{time.monotonic():.1f} start {name}", flush=True)
        call = StreamedCall(self.sidecar_url + "/v1/completions", body, headers)
        self.calls[name] = call
        call.start()
        if not self.order:
            assert call.first_token.wait(30), f"{name} never started: {self.state()}"
            self.order.append(name)
        held = sum(1 for call in self.calls.values() if not call.hang_up.is_set())
        seen = wait_until(lambda: self.spoiled() or in_sidecar(self.sidecar_url) == held, 60, 0.1)
        self.check()
        assert seen, f"{name} unseen: {self.state()}"
        print(f"{time.monotonic():.1f} seen {name}", flush=True)
        return call

    def spoiled(self) -> bool:
        return any(not call.is_alive() and not call.hang_up.is_set() for call in self.calls.values())

    def check(self) -> None:
        if self.spoiled():
            raise Spoiled(self.state())

    def started(self) -> list[str]:
        return [name for name, call in self.calls.items() if call.first_token.is_set()]

    def advance(self) -> str:
        """Hang up the running call; return the one vLLM starts next."""
        self.check()
        self.calls[self.order[-1]].hang_up.set()
        before = len(self.order)
        assert wait_until(lambda: len(self.started()) > before, 30), f"nothing started: {self.state()}"
        self.check()
        new = [name for name in self.started() if name not in self.order]
        print(f"{time.monotonic():.1f} advanced {new}", flush=True)
        assert len(new) == 1, f"more than one call started at once: {new}"
        self.order.extend(new)
        return new[0]

    def run_out(self) -> list[str]:
        """Advance until every call has started; then end the last one. The start order."""
        while len(self.order) < len(self.calls):
            self.advance()
        self.close()
        assert all(call.status == 200 for call in self.calls.values())
        return self.order

    def close(self) -> None:
        """Hang up every call and wait until the sidecar holds none."""
        for call in self.calls.values():
            call.hang_up.set()
        print(f"{time.monotonic():.1f} closing", flush=True)
        for call in self.calls.values():
            call.join(timeout=60)
        print(f"{time.monotonic():.1f} joined", flush=True)
        assert wait_until(lambda: in_sidecar(self.sidecar_url) == 0, 30), self.state()
        print(f"{time.monotonic():.1f} closed", flush=True)

    def state(self) -> str:
        """What the sidecar and vLLM hold, and which calls have started or ended (for failure messages)."""
        calls = {name: (call.first_at is not None, call.is_alive()) for name, call in self.calls.items()}
        running, waiting = vllm_gauge(self.server, "running"), vllm_gauge(self.server, "waiting")
        return (
            f"sidecar holds {in_sidecar(self.sidecar_url)}, vLLM running {running} waiting {waiting}, "
            f"calls (started, alive) {calls}"
        )


def attempt(sidecar_url: str, server: VllmServer, play: Callable[[Scenario], list[str]]) -> list[str]:
    """Run ``play`` on a fresh scenario; again (up to ATTEMPTS times) if the machine spoiled it."""
    reasons: list[str] = []
    for _ in range(ATTEMPTS):
        scenario = Scenario(sidecar_url, server)
        try:
            return play(scenario)
        except Spoiled as exc:
            reasons.append(str(exc))
            scenario.close()
    raise AssertionError(f"spoiled {ATTEMPTS} times by a slow machine: {reasons}")


def in_sidecar(url: str) -> float:
    """Calls the sidecar holds: admitted (in the engine) plus waiting in its queue."""
    try:
        page = httpx.get(url + "/metrics", timeout=30).text
    except httpx.TimeoutException:  # the machine is overloaded: not an answer, ask again
        return -1.0
    running = metric_value(page, "autellix_sidecar_running")
    return running + metric_value(page, "autellix_sidecar_queue_waiting")


def vllm_gauge(server: VllmServer, name: str) -> float:
    # vLLM answers /metrics slowly (~1 s) while it decodes on 2 cores: poll it only where time allows.
    return metric_value(server.metrics(), f"vllm:num_requests_{name}")


def test_the_sidecar_detects_the_priority_policy_from_server_info(
    small_priority_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    info = httpx.get(small_priority_vllm.url + "/server_info?config_format=json", timeout=30)
    assert info.status_code == 200
    assert info.json()["vllm_config"]["scheduler_config"]["policy"] == "priority"
    sidecar = sidecar_factory(small_priority_vllm.url, "--engine-priority", "auto")
    # vLLM builds the first /server_info answer slowly (it collects its environment, ~1 s); the sidecar
    # asks again at the next probe until it gets one.
    assert wait_until(lambda: "engine priority field" in sidecar.log_tail(200), timeout=30)
    assert "engine priority field: sent (engine reports a priority policy)" in sidecar.log_tail(200)
    page = httpx.get(sidecar.url + "/metrics", timeout=5).text
    assert metric_value(page, "autellix_sidecar_engine_priority_enabled") == 1


@pytest.mark.parametrize(
    ("engine_priority", "expected"),
    [
        ("auto", ["long-0", "long-1", "short", "long-2"]),
        ("off", ["long-0", "long-1", "long-2", "short"]),
    ],
)
def test_the_priority_field_reorders_calls_waiting_inside_vllm(
    small_priority_vllm: VllmServer,
    sidecar_factory: ServiceFactory,
    engine_priority: str,
    expected: list[str],
) -> None:
    # Window 3 over a batch of 1: calls wait *inside* vLLM, where our queue no longer orders them. Our
    # short program's call (queue level 0) enters vLLM behind long-2 (level 4): only the priority field,
    # which the sidecar sends only when it detected the priority policy, lets it overtake there. No KV
    # budget and no working-set gate: they would rightly keep endless calls out of this small cache,
    # and these must get in.
    sidecar = sidecar_factory(
        small_priority_vllm.url,
        "--engine-priority", engine_priority, "--window-mode", "fixed", "--max-in-flight", "3",
        "--no-kv-budget", "--working-set", "off", name=f"sidecar-priority-{engine_priority}",
    )  # fmt: skip
    if engine_priority == "auto":
        assert wait_until(lambda: "priority field: sent" in sidecar.log_tail(200), timeout=30)

    def play(scenario: Scenario) -> list[str]:
        for name in ("long-0", "long-1", "long-2"):
            scenario.start(name, LONG)  # long-1 and long-2 are admitted and wait inside vLLM
        assert scenario.advance() == "long-1"
        scenario.start("short", SHORT)  # admitted at once: it waits inside vLLM, behind long-2
        both_wait = wait_until(
            lambda: scenario.spoiled() or vllm_gauge(small_priority_vllm, "waiting") == 2, 60
        )
        print(f"{time.monotonic():.1f} both wait {both_wait}", flush=True)
        scenario.check()
        assert both_wait, scenario.state()
        return scenario.run_out()  # vLLM picks what waits: by priority, or by arrival

    assert attempt(sidecar.url, small_priority_vllm, play) == expected


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("plas", ["long-0", "short", "long-1", "long-2", "long-3"]),
        ("fcfs", ["long-0", "long-1", "long-2", "long-3", "short"]),
    ],
)
def test_plas_lets_a_short_program_overtake_a_long_programs_queued_calls(
    small_priority_vllm: VllmServer, sidecar_factory: ServiceFactory, scheduler: str, expected: list[str]
) -> None:
    # The engine is full (one sequence, and we keep one call in it): our queue decides who goes next.
    sidecar = sidecar_factory(
        small_priority_vllm.url,
        "--scheduler", scheduler, "--window-mode", "fixed", "--max-in-flight", "1",
        "--tick-interval", "0.01", "--working-set", "off", name=f"sidecar-{scheduler}",
    )  # fmt: skip

    def play(scenario: Scenario) -> list[str]:
        for name in ("long-0", "long-1", "long-2", "long-3"):
            scenario.start(name, LONG)
        scenario.start("short", SHORT)
        return scenario.run_out()  # each time the engine frees up, our queue picks

    assert attempt(sidecar.url, small_priority_vllm, play) == expected


def vllm_running(server: VllmServer) -> float:
    return metric_value(server.metrics(), "vllm:num_requests_running")


def test_a_client_that_goes_away_aborts_its_call_in_vllm(
    small_priority_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    server = small_priority_vllm
    sidecar = sidecar_factory(server.url)
    endless = {"model": server.model, "prompt": "go on", "max_tokens": ENDLESS, "ignore_eos": True}
    generated_before = metric_value(server.metrics(), "vllm:generation_tokens_total")
    # Streaming: read the first token, then hang up.
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", sidecar.url + "/v1/completions", json={**endless, "stream": True}) as reply,
    ):
        assert reply.status_code == 200
        lines = reply.iter_lines()  # kept referenced: a collected iterator closes the connection
        assert next(line for line in lines if line.startswith("data:"))
        # vLLM may stream the first token before it records the step's gauges.
        assert wait_until(lambda: vllm_running(server) == 1, timeout=15)
    assert wait_until(lambda: vllm_running(server) == 0, timeout=15)
    # Not streaming: give up waiting while vLLM still works on it.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sidecar.url + "/v1/completions", json=endless, timeout=1.0)
    assert wait_until(lambda: vllm_running(server) == 0, timeout=15)
    generated = metric_value(server.metrics(), "vllm:generation_tokens_total") - generated_before
    assert generated < ENDLESS, "an aborted call must not run to its end"
    page = httpx.get(sidecar.url + "/metrics", timeout=5).text
    assert metric_value(page, "autellix_sidecar_aborts_total", ('where="engine"',)) == 2
    assert metric_value(page, "autellix_sidecar_running") == 0
    # The engine is free again: the next call is served at once.
    started = time.monotonic()
    reply = httpx.post(sidecar.url + "/v1/completions", json={**endless, "max_tokens": 5}, timeout=30)
    assert reply.status_code == 200 and time.monotonic() - started < 5


def test_engine_queue_time_comes_from_vllms_per_request_metrics(
    small_priority_vllm: VllmServer, sidecar_factory: ServiceFactory
) -> None:
    server = small_priority_vllm
    # Window 2 over a batch of 1: the second call waits inside vLLM, which reports it (queue_time_ms).
    sidecar = sidecar_factory(server.url, "--window-mode", "fixed", "--max-in-flight", "2")
    body = {"model": server.model, "prompt": "queued", "max_tokens": 10, "ignore_eos": True}
    replies: list[httpx.Response] = []
    scenario = Scenario(sidecar.url, server)
    blocker = scenario.start("blocker", {})
    queued = threading.Thread(
        target=lambda: replies.append(httpx.post(sidecar.url + "/v1/completions", json=body, timeout=120))
    )
    queued.start()
    assert wait_until(lambda: vllm_gauge(server, "waiting") == 1, 30)
    time.sleep(0.5)  # let it wait in vLLM for a measurable while
    blocker.hang_up.set()
    queued.join(timeout=60)
    reply = replies[0]
    assert reply.status_code == 200
    queue_ms = reply.json()["metrics"]["queue_time_ms"]
    assert queue_ms >= 500, reply.json()["metrics"]
    usage = VllmAdapter().read_usage(reply.json())
    assert usage is not None and usage.engine_queue_time == pytest.approx(queue_ms / 1000)
    report = protocol.decode_report(reply.headers[protocol.REPORT_HEADER])
    # The sidecar admitted it at once; its wait is vLLM's queue time, not part of its execution time.
    assert report.queue_wait >= queue_ms / 1000 * 0.99
    assert report.exec_time < report.queue_wait
