"""What bench_faults.py and bench_soak.py share: the live stack, the client load and what they watch.

The stack (:class:`Stack`): a ``redis-server``, two simulated engines (``a100-llama3-8b`` at
``--time-scale``), a sidecar in front of each, and two proxy replicas that share Redis, each knowing
both sidecars as ``e0`` and ``e1``; every process on loopback, each of which may be killed, stopped and
started again on its own port.

The load (:func:`run_load`): ``programs`` concurrent programs, each a chain of chat calls through the
proxies with aiohttp (the raw HTTP an OpenAI client sends), half of them streamed (seeded), each call
``max_tokens`` forced with ``ignore_eos`` so that it lasts 0.5-2 s at time scale 1. A program sends
1 to ``2 calls_per_program - 1`` calls (seeded) with ``X-Program-Id``, then ends with
``DELETE /v1/programs/{id}`` (as the client helper does; ``delete_share`` of the programs, the others
just stop, as most agents do, and expire) and the next program begins. The client is
its own load balancer over the proxy URLs: a program prefers one proxy and, when it cannot connect,
tries the next (a connect failure is retried: nothing was sent); a call cut off once sent is not
retried (a POST that may have run). Every call ends in one outcome (:data:`OUTCOMES`); a call that has
not ended ``call_timeout`` seconds after it was sent is ``hung``.

The watcher (:class:`Watcher`) polls every proxy's ``GET /ready`` (backend health, table mode) every
0.1 s and keeps the transitions; :func:`table_state` reads what the program table and the sidecars hold
once the load has stopped (per-engine loads in Redis and in each proxy's view, calls in flight, queued
and running calls in the sidecars).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from autellix.launch import ServiceProcess, autellix_command, free_port, wait_backends_healthy

ENGINES = ("e0", "e1")
OUTCOMES = (
    "ok",
    "error_status",  # the proxy answered an error before any byte of a reply: not retried elsewhere
    "no_proxy",  # no proxy URL accepted the connection
    "stream_error_event",  # a stream broke off and ended with the API's error event and [DONE]
    "cut_off",  # the connection closed mid-call with no error event (a proxy that died, or a bug)
    "hung",  # no end within the client's timeout
)


# --- the stack ---------------------------------------------------------------------------------------


def _service(name: str, args: list[str], url: str, log_dir: Path) -> ServiceProcess:
    return ServiceProcess(name, args, url, log_dir / f"{name}.log", die_with_parent=True)


def _autellix(subcommand: str, name: str, port: int, args: list[str], log_dir: Path) -> ServiceProcess:
    command = autellix_command(subcommand, ["--host", "127.0.0.1", "--port", str(port), *args])
    return _service(name, command, f"http://127.0.0.1:{port}", log_dir)


def _wait_pong(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


@dataclass
class Stack:
    """Redis, two engines, two sidecars, two proxies; each restartable on its own port."""

    log_dir: Path
    time_scale: float = 1.0
    proxy_args: tuple[str, ...] = ()
    redis_port: int = field(default_factory=free_port)
    engines: list[ServiceProcess] = field(default_factory=list)
    sidecars: list[ServiceProcess] = field(default_factory=list)
    proxies: list[ServiceProcess] = field(default_factory=list)
    redis: ServiceProcess | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def redis_service(self) -> ServiceProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        args = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no"]  # fmt: skip
        return _service("redis", args, self.redis_url, self.log_dir)

    def start_redis(self) -> None:
        self.redis = self.redis_service().launch()
        _wait_pong(self.redis_port)

    def start(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        engine_args = ["--profile", "a100-llama3-8b", "--time-scale", str(self.time_scale),
                       "--scheduling-policy", "priority", "--log-level", "warning"]  # fmt: skip
        self.engines = [_autellix("sim-engine", f"engine-{e}", free_port(), engine_args, self.log_dir)
                        for e in ENGINES]  # fmt: skip
        for service in self.engines:
            service.launch()
        for service in self.engines:
            service.wait_healthy()
        self.sidecars = [
            _autellix("sidecar", f"sidecar-{e}", free_port(), self._sidecar_args(i), self.log_dir)
            for i, e in enumerate(ENGINES)
        ]
        for service in self.sidecars:
            service.launch()
        for service in self.sidecars:
            service.wait_healthy(health_path="/ready")
        self.proxies = [_autellix("proxy", f"proxy-{i}", free_port(), self._proxy_args(i), self.log_dir)
                        for i in range(2)]  # fmt: skip
        for service in self.proxies:
            service.launch()
        for service in self.proxies:
            service.wait_healthy()
            wait_backends_healthy(service)
        return self

    def _sidecar_args(self, index: int) -> list[str]:
        return ["--engine-url", self.engines[index].url, "--engine-kind", "sim", "--scheduler", "atlas",
                "--log-level", "warning"]  # fmt: skip

    def _proxy_args(self, index: int) -> list[str]:
        backends = [
            part
            for e, s in zip(ENGINES, self.sidecars, strict=True)
            for part in ("--backend", f"{e}={s.url}")
        ]
        return [*backends, "--redis-url", self.redis_url, "--replica-id", f"proxy-{index}", "--log-level",
                "info", *self.proxy_args]  # fmt: skip

    def restart(self, service: ServiceProcess, health_path: str = "/health") -> ServiceProcess:
        """The same command on the same port again (the old process must be gone)."""
        again = _service(service.name, service.args, service.url, self.log_dir)
        again.launch()
        again.wait_healthy(health_path=health_path)
        for group in (self.engines, self.sidecars, self.proxies):
            for i, item in enumerate(group):
                if item is service:
                    group[i] = again
        return again

    def all(self) -> list[ServiceProcess]:
        return [*([self.redis] if self.redis else []), *self.engines, *self.sidecars, *self.proxies]

    def stop(self) -> None:
        for service in reversed(self.all()):
            with contextlib.suppress(Exception):
                service.stop(timeout=5.0)


# --- the load ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRecord:
    sent: float  # seconds since the load began
    latency: float
    stream: bool
    outcome: str
    proxy: int  # the proxy that took the call (-1: none)
    detail: str = ""


@dataclass
class LoadStats:
    calls: list[CallRecord] = field(default_factory=list)
    failovers: int = 0  # connect failures the client retried on another proxy URL
    first_ok_after: dict[int, float] = field(default_factory=dict)  # proxy -> first ok after a mark

    def counts(self) -> dict[str, int]:
        counted = Counter(call.outcome for call in self.calls)
        return {outcome: counted.get(outcome, 0) for outcome in OUTCOMES}


@dataclass(frozen=True, slots=True)
class LoadShape:
    programs: int = 6
    calls_per_program: int = 6
    min_tokens: int = 40
    max_tokens: int = 160
    stream_share: float = 0.5
    call_timeout: float = 60.0
    delete_share: float = 0.5  # programs ended by DELETE; the others just stop (left to expire)
    seed: int = 0


def _body(rng: random.Random, program: str, turn: int, shape: LoadShape, stream: bool) -> dict[str, Any]:
    words = " ".join(f"w{rng.randrange(1000)}" for _ in range(rng.randrange(20, 200)))
    return {
        "model": "sim-llama",
        "messages": [{"role": "user", "content": f"program {program} turn {turn}: {words}"}],
        "max_tokens": rng.randint(shape.min_tokens, shape.max_tokens),
        "ignore_eos": True,
        "stream": stream,
    }


async def _read_stream(reply: aiohttp.ClientResponse) -> tuple[str, str]:
    """(outcome, detail) of an SSE reply read to its end."""
    error: str | None = None
    buffer = b""
    async for chunk in reply.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    return ("stream_error_event", error) if error else ("ok", "")
                with contextlib.suppress(ValueError):
                    parsed = json.loads(data)
                    if isinstance(parsed, dict) and "error" in parsed:
                        error = str(parsed["error"].get("message", parsed["error"]))[:200]
    return "cut_off", f"stream ended without [DONE] (error event: {error})"


async def _one_call(
    session: aiohttp.ClientSession, urls: list[str], first: int, body: dict[str, Any], program: str,
    stats: LoadStats, began: float, timeout: float,
) -> CallRecord:  # fmt: skip
    sent = time.monotonic()
    stream = bool(body["stream"])
    proxy = -1
    try:
        async with asyncio.timeout(timeout):
            for k in range(len(urls)):
                proxy = (first + k) % len(urls)
                try:
                    reply = await session.post(
                        urls[proxy] + "/v1/chat/completions", json=body, headers={"X-Program-Id": program}
                    )
                except aiohttp.ClientConnectorError:
                    if k + 1 < len(urls):
                        stats.failovers += 1
                    continue
                async with reply:
                    if reply.status != 200:
                        detail = f"{reply.status} {(await reply.text())[:200]}"
                        latency = time.monotonic() - sent
                        return CallRecord(sent - began, latency, stream, "error_status", proxy, detail)
                    if stream:
                        outcome, detail = await _read_stream(reply)
                    else:
                        await reply.json()
                        outcome, detail = "ok", ""
                return CallRecord(sent - began, time.monotonic() - sent, stream, outcome, proxy, detail)
            return CallRecord(sent - began, time.monotonic() - sent, stream, "no_proxy", -1)
    except TimeoutError:
        return CallRecord(sent - began, time.monotonic() - sent, stream, "hung", proxy)
    except (aiohttp.ClientError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {exc}"[:200]
        return CallRecord(sent - began, time.monotonic() - sent, stream, "cut_off", proxy, detail)


async def _program_loop(
    index: int, urls: list[str], shape: LoadShape, stats: LoadStats, stop: asyncio.Event, began: float
) -> None:
    rng = random.Random(shape.seed * 1000 + index)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        generation = 0
        while not stop.is_set():
            program = f"bench-{shape.seed}-{index}-{generation}"
            generation += 1
            for turn in range(rng.randint(1, 2 * shape.calls_per_program - 1)):  # mean calls_per_program
                if stop.is_set():
                    break
                body = _body(rng, program, turn, shape, rng.random() < shape.stream_share)
                record = await _one_call(
                    session, urls, index, body, program, stats, began, shape.call_timeout
                )
                stats.calls.append(record)
                await asyncio.sleep(rng.uniform(0.0, 0.2))  # an agent's think/tool time
            if rng.random() >= shape.delete_share:
                continue  # most agents never say they are done: the program expires after its TTL
            for k in range(len(urls)):  # end the program (the client helper's DELETE)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with asyncio.timeout(5.0):
                        async with session.delete(f"{urls[(index + k) % len(urls)]}/v1/programs/{program}"):
                            break


async def run_load(
    urls: list[str], shape: LoadShape, stop: asyncio.Event, began: float, stats: LoadStats | None = None
) -> LoadStats:
    """Programs until ``stop`` is set; every call that was sent is waited for (bounded by the timeout).
    ``stats`` (filled as calls end) may be given to watch the load while it runs."""
    stats = stats if stats is not None else LoadStats()
    await asyncio.gather(*(_program_loop(i, urls, shape, stats, stop, began) for i in range(shape.programs)))
    return stats


# --- what the proxies say ------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Polls every proxy's ``/ready``; ``events`` are (seconds since ``began``, proxy, what, value)."""

    urls: list[str]
    began: float
    interval: float = 0.1
    events: list[tuple[float, int, str, object]] = field(default_factory=list)
    _last: dict[tuple[int, str], object] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                await asyncio.gather(*(self._poll(session, i) for i in range(len(self.urls))))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

    async def _poll(self, session: aiohttp.ClientSession, index: int) -> None:
        now = time.monotonic() - self.began
        try:
            async with session.get(self.urls[index] + "/ready") as reply:
                data = await reply.json()
            seen: dict[str, object] = {"up": True, "table": data.get("table")}
            seen.update({f"backend:{name}": ok for name, ok in data.get("backends", {}).items()})
        except (aiohttp.ClientError, TimeoutError, ValueError):
            seen = {"up": False}
        for what, value in seen.items():
            if self._last.get((index, what)) != value:
                self._last[(index, what)] = value
                self.events.append((now, index, what, value))

    def first(self, what: str, value: object, after: float, proxy: int | None = None) -> float | None:
        """When ``what`` first became ``value`` at or after ``after`` (on ``proxy``, or the last proxy to
        get there when None); seconds since ``began``."""
        proxies = [proxy] if proxy is not None else range(len(self.urls))
        times = []
        for index in proxies:
            hits = [t for t, i, w, v in self.events if i == index and w == what and v == value and t >= after]
            if not hits:
                return None
            times.append(min(hits))
        return max(times)


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Label text -> value of every sample called ``name``."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] == name:
            samples[head[len(name) :]] = float(value)
    return samples


async def table_state(stack: Stack, prefix: str = "autellix") -> dict[str, Any]:
    """What should be empty once the load has stopped: Redis's fleet loads, replica loads and calls in
    flight, each live proxy's engine loads and calls in flight, each live sidecar's queued and running
    calls."""
    import redis.asyncio as aioredis

    state: dict[str, Any] = {}
    client = aioredis.Redis.from_url(stack.redis_url, socket_timeout=2.0)
    try:
        fleet = "{" + prefix + "}"
        loads = await client.hgetall(f"{fleet}:loads")
        state["redis_loads"] = {_text(k): int(v) for k, v in loads.items()}
        stale: dict[str, int] = {}
        async for key in client.scan_iter(match=f"{fleet}:rloads:*"):
            for engine, count in (await client.hgetall(key)).items():
                stale[f"{_text(key)}/{_text(engine)}"] = int(count)
        calls = 0
        async for key in client.scan_iter(match=f"{fleet}:calls:*"):
            calls += int(await client.scard(key))
        state["redis_replica_loads"] = stale
        state["redis_calls_in_flight"] = calls
    except Exception as exc:  # reported, not raised: Redis may be the fault
        state["redis_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as session:
        proxy_metrics = ("autellix_proxy_engine_load", "autellix_proxy_calls_in_flight")
        sidecar_metrics = ("autellix_sidecar_queue_waiting", "autellix_sidecar_queue_running")
        for name, service, metrics in [
            *((p.name, p, proxy_metrics) for p in stack.proxies),
            *((s.name, s, sidecar_metrics) for s in stack.sidecars),
        ]:
            if not service.alive:
                continue
            try:
                async with session.get(service.url + "/metrics") as reply:
                    text = await reply.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                state[name] = f"unreachable: {exc}"
                continue
            state[name] = {metric: sum(metric_samples(text, metric).values()) for metric in metrics}
    return state


async def proxy_counters(stack: Stack) -> dict[str, float]:
    """Summed over the live proxies: calls retried on another engine, and failed upstream exchanges by
    kind (a restarted proxy counts from its restart)."""
    totals: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as session:
        for proxy in stack.proxies:
            if not proxy.alive:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(proxy.url + "/metrics") as reply:
                    text = await reply.text()
                totals["retries"] = totals.get("retries", 0.0) + sum(
                    metric_samples(text, "autellix_proxy_retries_total").values()
                )
                for labels, value in metric_samples(text, "autellix_proxy_upstream_errors_total").items():
                    kind = labels.partition('kind="')[2].partition('"')[0]
                    totals[f"upstream_{kind}"] = totals.get(f"upstream_{kind}", 0.0) + value
    return totals


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def consistent(state: dict[str, Any]) -> bool:
    """Nothing left counted anywhere."""
    if "redis_error" in state or any(state.get("redis_loads", {}).values()):
        return False
    if any(state.get("redis_replica_loads", {}).values()) or state.get("redis_calls_in_flight"):
        return False
    return all(
        not any(v.values()) for k, v in state.items() if isinstance(v, dict) and not k.startswith("redis")
    )


async def wait_consistent(stack: Stack, deadline: float) -> tuple[dict[str, Any], float | None]:
    """Poll :func:`table_state` until :func:`consistent` or ``deadline`` (monotonic); (state, seconds
    it took, None if never)."""
    began = time.monotonic()
    while True:
        state = await table_state(stack)
        if consistent(state):
            return state, time.monotonic() - began
        if time.monotonic() >= deadline:
            return state, None
        await asyncio.sleep(0.5)


def latency_summary(calls: list[CallRecord]) -> dict[str, float]:
    from autellix.records import percentile

    values = [c.latency for c in calls if c.outcome == "ok"]
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": sum(values) / len(values), "p95": percentile(values, 95.0),
            "max": max(values)}  # fmt: skip
