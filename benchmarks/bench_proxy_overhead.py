"""The proxy's added latency and throughput against an instantly answering backend, side by side with
the Rust routers users would pick instead (issue 5).

Starts, as separate processes on loopback: a tiny aiohttp backend that answers chat completions at once
(non-streaming JSON, or a short SSE stream), a ``redis-server``, ``autellix proxy`` with the memory table
and with the Redis table (calls going ahead of their starts, the default, and ``proxy-redis-wait``: every
call waiting for its start, ``--no-starts-ahead``), a bare aiohttp pass-through (``aiohttp-floor``: what
any aiohttp proxy costs before doing anything), and ``vllm-router`` and ``smg`` round-robin over the
same backend (from the
benchmark's own environment; ``--no-rust-routers`` leaves them out). The routers keep their defaults
but for loopback, ``round_robin``, warning-level logs and a free Prometheus port (``rust_routers.py``
says why no other default moves the figures). A closed-loop aiohttp client (this process) sends chat
completions at concurrency 1 and 32, streaming and not, directly to the backend and through each
target; at concurrency 32 twice: paced at ``--rate`` requests/s (loaded, not saturated: the
added-latency figure) and back to back (saturated: the requests/s figure, where latency is queueing,
by Little's law).

First chunk: when the prompt is ``bench-gap`` the backend streams its first chunk at once and the next
one ``--gap-ms`` later (the prompt selects this, not the model name: smg serves only the first model a
backend lists in ``/v1/models`` and answers 404 to any other). At concurrency 1 the client times the
first body bytes of the reply, directly and through each target. A target that holds the first chunk
back (Nagle with delayed ACKs, or buffering) adds about 40 ms or the gap; one that forwards it at once
adds what it adds to a non-streaming call.

Figures: latency p50/p99; added latency (a target's percentile minus the direct one at the same
concurrency and mode); requests/s; the target process's CPU time per request (from ``/proc``; other load
on the machine hardly moves it, and one process on a free core serves about 1e6 / that many
requests/s); errors (non-200 answers and failed connections, left out of the latencies). All processes
share this machine's cores, so the client and the backend take CPU from the target.
Targets (issue 5), evaluated at the end for each target: added p50 <= 1 ms at concurrency 1; added p99
<= 5 ms at concurrency 32 (paced); >= 1,500 requests/s (concurrency 32, back to back, non-streaming);
added p50 within 2x of the faster Rust router's (concurrency 1); no first-chunk delay (added first-chunk
p50 <= 1 ms, and p90 <= gap / 4: a Nagle or buffering stall delays most first chunks by 40 ms or the
gap, while on a shared machine a p99 of a hundred samples per round is any one preempted request).

Every configuration runs ``--rounds`` times, interleaved with the others (the order of the targets
rotating from round to round), and the figures are medians of the rounds' figures: other work on a
shared machine comes and goes, and interleaving spreads it over every target. Each run starts with a
warm-up at its own concurrency (connections, scripts, caches), not measured. The defaults (3 rounds of
2 s, 7 configurations, 7 targets) take about 6 minutes.

Redis off this host: ``--redis-delay-ms D`` puts a relay process between the proxies and Redis that
delays every byte D ms each way (order kept), as a Redis in another pod or on another node would; it
shows what a call gains from not waiting for its start (``proxy-redis`` against ``proxy-redis-wait``),
which on loopback is within the noise.

Before and after a change: ``--baseline REF`` also runs the three proxies of commit REF (its ``autellix``
package from ``git archive``, in this environment) as ``<name>@base``, interleaved with the others in the
same rounds, and prints each proxy's added latency against its twin's (their difference needs no
direct run of its own), its requests/s and its CPU per request as ratios.

Usage: ``.venv/bin/python benchmarks/bench_proxy_overhead.py [--seconds 2] [--rounds 3] [--rate 1500]
[--gap-ms 20] [--routers-venv PATH | --no-rust-routers] [--no-floor] [--redis-delay-ms 0]
[--baseline REF]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rust_routers import DEFAULT_VENV, ensure_router_env, start_routers, wait_answering  # noqa: E402

from autellix.launch import (  # noqa: E402
    ServiceProcess,
    ServiceStartError,
    autellix_command,
    free_port,
    process_cpu_seconds,
)

MODEL, GAP_PROMPT = "bench", "bench-gap"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
GAP_BODY = {**BODY, "messages": [{"role": "user", "content": GAP_PROMPT}]}
REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"o"}}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"k"}}]}\n\n',
    b"data: [DONE]\n\n",
]
GAP = "first chunk"  # the load label of the first-chunk configuration
FLOOR = "aiohttp-floor"  # the bare aiohttp pass-through: a reference, not a proxy of ours
BASE = "@base"  # the suffix of a proxy run from the --baseline commit
SESSION = web.AppKey("session", aiohttp.ClientSession)
Row = dict[str, Any]


# --- the instant backend (run in its own process with --serve-backend PORT) ---------------------------


def serve_backend(port: int, gap: float) -> None:
    reply = json.dumps(REPLY).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for index, chunk in enumerate(CHUNKS):
                if index == 1 and body["messages"][-1]["content"] == GAP_PROMPT:
                    await asyncio.sleep(gap)  # the first chunk at once, the rest after the gap
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(body=reply, content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        card = {"id": MODEL, "object": "model", "owned_by": "bench"}
        return web.json_response({"object": "list", "data": [card]})

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the aiohttp floor (run in its own process with --serve-floor PORT --floor-backend URL) -----------


def serve_floor(port: int, backend: str) -> None:
    """The least an aiohttp proxy can do: pass the body to the backend on a pooled client session and
    its reply back, streams chunk by chunk, on uvloop like our services. No parsing, routing or table:
    what the proxy's own work adds is its figure minus this one, and a Python proxy cannot go below it.
    """
    upstream = backend + "/v1/chat/completions"
    hop_by_hop = {"content-length", "transfer-encoding", "connection", "keep-alive"}

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app[SESSION].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app[SESSION].post(upstream, data=raw, headers=headers) as reply:
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in hop_by_hop}
            if reply.content_type != "text/event-stream":
                return web.Response(status=reply.status, body=await reply.read(), headers=kept)
            response = web.StreamResponse(status=reply.status, headers=kept)
            await response.prepare(request)
            async for chunk in reply.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def models(request: web.Request) -> web.Response:
        async with request.app[SESSION].get(backend + "/v1/models") as reply:
            return web.Response(status=reply.status, body=await reply.read(), content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


# --- a slower network to Redis (run in its own process with --serve-relay PORT) ---------------------


def serve_relay(port: int, target_port: int, delay: float) -> None:
    """Pass bytes between clients and Redis, each way ``delay`` seconds late (order kept): Redis in
    another pod or on another node, where a round trip costs more than on loopback. Threads and
    ``time.sleep`` rather than an event loop, whose timers have millisecond granularity."""

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        due: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def send() -> None:
            while True:
                at, data = due.get()
                if (wait := at - time.monotonic()) > 0:
                    time.sleep(wait)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)

        threading.Thread(target=send, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                due.put((time.monotonic() + delay, data))
        due.put((time.monotonic() + delay, b""))

    def relay(client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            client, _ = server.accept()
            threading.Thread(target=relay, args=(client,), daemon=True).start()


# --- the load generator ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else math.nan


async def closed_loop(
    url: str,
    concurrency: int,
    stream: bool,
    seconds: float,
    rate: float | None = None,
    body: Mapping[str, object] = BODY,
    warmup: int = 50,
) -> dict[str, float]:
    """``concurrency`` workers send back to back; with ``rate`` each is paced to ``rate / concurrency``
    requests/s (a worker that falls behind sends at once), so the target is loaded but not saturated.
    Streams are read chunk by chunk; the first body bytes time the first chunk."""
    payload = json.dumps({**body, "stream": stream}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    firsts: list[float] = []
    errors = sent = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(program: str) -> None:
            nonlocal errors, sent
            sent += 1
            began = time.perf_counter()
            first: float | None = None
            try:
                async with session.post(
                    url, data=payload, headers={**headers, "X-Program-Id": program}
                ) as reply:
                    if stream:
                        async for _chunk in reply.content.iter_any():
                            first = first or time.perf_counter()
                    else:
                        await reply.read()
                    ok = reply.status == 200
            except aiohttp.ClientError:
                ok = False
            if not ok:
                errors += 1
                await asyncio.sleep(0.001)  # a dead target must not turn the loop into a busy spin
                return
            latencies.append(time.perf_counter() - began)
            if first is not None:
                firsts.append(first - began)

        async def warm(index: int) -> None:
            for _ in range(-(-max(warmup, 2 * concurrency) // concurrency) if warmup else 0):
                await one(f"warm-{index}")

        await asyncio.gather(*(warm(i) for i in range(concurrency)))
        latencies.clear()
        firsts.clear()
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            period = concurrency / rate if rate else 0.0
            next_at = time.perf_counter() + period * index / concurrency
            while time.perf_counter() < deadline:
                if period:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += period
                await one(f"program-{index}")

        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    result = {
        "requests": len(latencies),
        "errors": errors,
        "sent": sent,  # warm-up included: the denominator of the CPU per request
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else math.nan,
    }
    if stream:
        for q in (50, 90, 99):
            result[f"first_p{q}_ms"] = percentile(firsts, q / 100)
    return result


# --- the processes ---------------------------------------------------------------------------------


def start_redis(log_dir: Path) -> tuple[ServiceProcess, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = ServiceProcess(
        "redis", args, f"redis://127.0.0.1:{port}/0", log_dir / "redis.log", die_with_parent=True
    )
    redis.launch()
    wait_pong(redis, port)
    return redis, redis.url


def wait_pong(service: ServiceProcess, port: int) -> None:
    """Until ``service`` answers Redis's PING on ``port`` (it is stopped if it never does)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    service.stop()
    raise SystemExit(f"{service.name} did not answer PING on port {port}")


def start_proxy(
    name: str, log_dir: Path, backend: str, extra: list[str], source: Path | None = None
) -> ServiceProcess:
    """A proxy of this tree, or (``source``) of the ``autellix`` package :func:`baseline_tree` made."""
    port = free_port()
    args = ["--port", str(port), "--backend", f"bench={backend}", "--log-level", "warning", *extra]
    service = ServiceProcess(
        name=name,
        args=autellix_command("proxy", args) if source is None else baseline_command(["proxy", *args]),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"{name}.log",
        die_with_parent=True,
        env={"PYTHONPATH": str(source)} if source is not None else {},
    )
    service.start()
    wait_answering(service, (BODY, GAP_BODY))  # the proxy has read the backend's /v1/models
    return service


def baseline_command(args: list[str]) -> list[str]:
    # -P: the working directory (this tree, when run from its root) must not come before PYTHONPATH
    return [sys.executable, "-P", "-m", "autellix", *args]


def baseline_tree(ref: str, into: Path) -> str:
    """Check out ``ref``'s ``autellix`` package into ``into`` (``git archive``: no worktree, no index)
    and prove that a process run as the baseline imports it from there; returns the commit."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {ref!r} is not a commit of this repository: {commit.stderr.strip()}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit.stdout.strip(), "autellix"],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "import autellix; print(autellix.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(into)},
    )
    if not Path(probe.stdout.strip()).resolve().is_relative_to(into.resolve()):
        raise SystemExit(f"the baseline would import autellix from {probe.stdout.strip()}, not {into}")
    return commit.stdout.strip()


def baseline_flags(extra: list[str]) -> list[str]:
    """The same flags with a key prefix of its own: the baseline's programs are not this tree's."""
    return [
        f"{flag}-base" if index and extra[index - 1] == "--redis-key-prefix" else flag
        for index, flag in enumerate(extra)
    ]


def start_relay(log_dir: Path, redis_url: str, delay_ms: float) -> ServiceProcess:
    port = free_port()
    target = redis_url.rsplit(":", 1)[1].split("/", 1)[0]
    args = [sys.executable, __file__, "--serve-relay", str(port), "--relay-target", target]
    relay = ServiceProcess(
        "redis-relay",
        [*args, "--redis-delay-ms", str(delay_ms)],
        f"redis://127.0.0.1:{port}/0",
        log_dir / "redis-relay.log",
        die_with_parent=True,
    )
    relay.launch()
    wait_pong(relay, port)
    return relay


def start_floor(log_dir: Path, backend: str) -> ServiceProcess:
    port = free_port()
    args = [sys.executable, __file__, "--serve-floor", str(port), "--floor-backend", backend]
    floor = ServiceProcess(
        FLOOR, args, f"http://127.0.0.1:{port}", log_dir / f"{FLOOR}.log", die_with_parent=True
    )
    floor.start()
    wait_answering(floor, (BODY, GAP_BODY))
    return floor


# --- the report ------------------------------------------------------------------------------------


def add_differences(rows: list[Row]) -> None:
    """Each row's added figures: its percentile minus the direct one of the same configuration."""
    direct = {(r["concurrency"], r["load"], r["stream"]): r for r in rows if r["target"] == "direct"}
    for row in rows:
        base = direct[(row["concurrency"], row["load"], row["stream"])]
        for key in ("p50_ms", "p99_ms", "first_p50_ms", "first_p90_ms", "first_p99_ms"):
            if key in row:
                row[f"added_{key}"] = row[key] - base[key]


def print_tables(rows: list[Row], gap_ms: float) -> None:
    print(
        f"{'target':<22}{'conc':>5}{'load':>13}{'stream':>8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'cpu us/req':>11}{'errors':>8}"
    )
    for row in rows:
        if row["load"] != GAP:
            print(
                f"{row['target']:<22}{row['concurrency']:>5}{row['load']:>13}{row['stream']!s:>8}"
                f"{row['requests_per_s']:>8.0f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
                f"{row['added_p50_ms']:>9.2f}{row['added_p99_ms']:>9.2f}"
                f"{row.get('cpu_us_per_request', math.nan):>11.0f}{row['errors']:>8.0f}"
            )
    print(f"\nfirst chunk (concurrency 1, streaming; the backend sends the next chunk {gap_ms:g} ms later)")
    print(
        f"{'target':<22}{'first p50':>10}{'first p99':>10}{'+first p50':>11}{'+first p90':>11}"
        f"{'+first p99':>11}{'total p50':>10}{'+total p50':>11}{'errors':>8}"
    )
    for row in rows:
        if row["load"] == GAP:
            print(
                f"{row['target']:<22}{row['first_p50_ms']:>10.2f}{row['first_p99_ms']:>10.2f}"
                f"{row['added_first_p50_ms']:>11.2f}{row['added_first_p90_ms']:>11.2f}"
                f"{row['added_first_p99_ms']:>11.2f}"
                f"{row['p50_ms']:>10.2f}{row['added_p50_ms']:>11.2f}{row['errors']:>8.0f}"
            )


def compare_with_baseline(rows: list[Row]) -> list[Row]:
    """Each proxy against its baseline twin in the same configuration: added latency this tree minus
    the baseline's (both measured against the same direct run), CPU per request as a ratio."""
    table = {(r["target"], r["concurrency"], r["load"], r["stream"]): r for r in rows}
    out: list[Row] = []
    for row in rows:
        twin = table.get((row["target"] + BASE, row["concurrency"], row["load"], row["stream"]))
        if twin is None:
            continue
        first = row["load"] == GAP
        key = "added_first_p50_ms" if first else "added_p50_ms"
        this_cpu, base_cpu = row.get("cpu_us_per_request", math.nan), twin.get("cpu_us_per_request", math.nan)
        out.append(
            {
                "target": row["target"],
                "concurrency": row["concurrency"],
                "load": row["load"],
                "stream": row["stream"],
                "figure": "added first-chunk p50 ms" if first else "added p50 ms",
                "this": row[key],
                "base": twin[key],
                "delta_p50_ms": row[key] - twin[key],
                "delta_p99_ms": row["added_p99_ms"] - twin["added_p99_ms"],
                "requests_per_s_ratio": row["requests_per_s"] / twin["requests_per_s"],
                "cpu_ratio": this_cpu / base_cpu if base_cpu > 0 else math.nan,
            }
        )
    return out


def print_baseline(rows: list[Row], ref: str, commit: str) -> None:
    print(f"\nthis tree against {ref} ({commit[:12]}), side by side in this run (medians of the rounds)")
    print(
        f"{'proxy':<18}{'conc':>5}{'load':>13}{'stream':>8}{'+p50 this':>10}{'+p50 base':>10}"
        f"{'delta p50':>10}{'delta p99':>10}{'req/s x':>8}{'cpu x':>7}"
    )
    for r in rows:
        load = "1st chunk" if r["load"] == GAP else r["load"]
        print(
            f"{r['target']:<18}{r['concurrency']:>5}{load:>13}{r['stream']!s:>8}{r['this']:>10.2f}"
            f"{r['base']:>10.2f}{r['delta_p50_ms']:>+10.2f}{r['delta_p99_ms']:>+10.2f}"
            f"{r['requests_per_s_ratio']:>8.2f}{r['cpu_ratio']:>7.2f}"
        )


def verdict(name: str, value: float, limit: float, at_most: bool = True, note: str = "") -> Row:
    """One check of the summary; a figure that is not a number (no samples) misses."""
    ok = value <= limit if at_most else value >= limit
    return {"check": name, "value": value, "limit": limit, "at_most": at_most, "pass": ok, "note": note}


def evaluate(
    rows: list[Row], routers: list[str], rate: float, gap_ms: float, no_routers: str
) -> dict[str, list[Row]]:
    """Issue 5's targets for every target (each a check: name, figure, limit, verdict); without Rust
    routers the 2x check has no verdict and ``no_routers`` says why."""
    table = {(r["target"], r["concurrency"], r["load"], r["stream"]): r for r in rows}
    paced = f"paced {rate:.0f}/s"
    summary: dict[str, list[Row]] = {}
    for target in dict.fromkeys(r["target"] for r in rows if r["target"] != "direct"):
        checks: list[Row] = []
        for stream in (False, True):
            mode = "stream" if stream else "non-stream"
            added = table[(target, 1, "c=1", stream)]["added_p50_ms"]
            checks.append(verdict(f"added p50 c=1 {mode} (ms)", added, 1.0))
            loaded = table[(target, 32, paced, stream)]["added_p99_ms"]
            checks.append(verdict(f"added p99 c=32 {paced} {mode} (ms)", loaded, 5.0))
        saturated = table[(target, 32, "max", False)]
        cpu = saturated.get("cpu_us_per_request", math.nan)
        note = f"cpu {cpu:.0f} us/req: ~{1e6 / cpu:.0f}/s on a free core" if cpu > 0 else ""
        rps = saturated["requests_per_s"]
        checks.append(verdict("req/s c=32 max non-stream", rps, 1500.0, at_most=False, note=note))
        for stream in (False, True):
            name = f"added p50 c=1 {'stream' if stream else 'non-stream'} <= 2x faster Rust router's (ms)"
            mine = table[(target, 1, "c=1", stream)]["added_p50_ms"]
            rivals = {rival: table[(rival, 1, "c=1", stream)]["added_p50_ms"] for rival in routers}
            if not rivals:
                checks.append({**verdict(name, mine, math.nan), "pass": None, "note": no_routers})
                continue
            fastest = min(rivals, key=rivals.__getitem__)
            theirs = rivals[fastest]
            ratio = f"ratio {mine / theirs:.2f}" if theirs > 0 else "ratio undefined: theirs <= 0"
            checks.append(verdict(name, mine, 2 * theirs, note=f"{fastest} adds {theirs:.2f} ms; {ratio}"))
        gap = table[(target, 1, GAP, True)]
        extra = gap["added_first_p50_ms"] - table[(target, 1, "c=1", True)]["added_p50_ms"]
        note = f"{extra:+.2f} ms against its added p50 c=1 stream"
        checks.append(verdict("first chunk added p50 (ms)", gap["added_first_p50_ms"], 1.0, note=note))
        stall = f"a stall adds the gap or 40 ms; p99 {gap['added_first_p99_ms']:.2f}"
        checks.append(
            verdict("first chunk added p90 (ms)", gap["added_first_p90_ms"], gap_ms / 4, note=stall)
        )
        summary[target] = checks
    return summary


def print_summary(summary: dict[str, list[Row]], routers_status: str) -> None:
    print(f"\nsummary: issue 5's targets (medians of the rounds; {routers_status})")
    for target, checks in summary.items():
        print(target)
        for c in checks:
            sign = "<=" if c["at_most"] else ">="
            verdict = {True: "PASS", False: "MISS", None: "n/a "}[c["pass"]]
            note = f"  ({c['note']})" if c["note"] else ""
            print(f"  {verdict}  {c['check']:<62}{c['value']:>9.2f} {sign} {c['limit']:<8.2f}{note}")


# --- the run ---------------------------------------------------------------------------------------


def measure(targets: list[tuple[str, str, ServiceProcess | None]], args: argparse.Namespace) -> list[Row]:
    """Every configuration against every target, ``args.rounds`` interleaved times; one row of medians
    per (configuration, target), in that order."""
    configs: list[tuple[int, float | None, bool, str]] = [
        (concurrency, rate, stream, label)
        for concurrency, rate, label in (
            (1, None, "c=1"),
            (32, args.rate, f"paced {args.rate:.0f}/s"),
            (32, None, "max"),
        )
        for stream in (False, True)
    ]
    configs.append((1, None, True, GAP))
    runs: dict[tuple[str, int, str, bool], list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        shift = round_index % len(targets)
        for concurrency, rate, stream, label in configs:
            body, warmup = (GAP_BODY, 5) if label == GAP else (BODY, 50)
            for name, url, service in targets[shift:] + targets[:shift]:
                pid = service.process.pid if service is not None and service.process else None
                cpu_before = process_cpu_seconds(pid) if pid else 0.0
                result = asyncio.run(
                    closed_loop(
                        url + "/v1/chat/completions", concurrency, stream, args.seconds, rate, body, warmup
                    )
                )
                if pid and result["sent"]:
                    result["cpu_us_per_request"] = (
                        (process_cpu_seconds(pid) - cpu_before) / result["sent"] * 1e6
                    )
                runs.setdefault((name, concurrency, label, stream), []).append(result)
    rows: list[Row] = []
    for concurrency, _rate, stream, label in configs:
        for name, _url, _service in targets:
            results = runs[(name, concurrency, label, stream)]
            merged = {key: statistics.median(r[key] for r in results) for key in results[0]}
            rows.append(
                {"target": name, "concurrency": concurrency, "load": label, "stream": stream, **merged}
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="offered requests/s of the paced runs at concurrency 32"
    )
    parser.add_argument(
        "--gap-ms", type=float, default=20.0, help="delay before the second chunk of bench-gap"
    )
    parser.add_argument(
        "--routers-venv", type=Path, default=DEFAULT_VENV, help="the Rust routers' environment"
    )
    parser.add_argument("--no-rust-routers", action="store_true", help="leave vllm-router and smg out")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_proxy_overhead.json"))
    parser.add_argument("--no-floor", action="store_true", help="leave the bare aiohttp pass-through out")
    parser.add_argument("--serve-backend", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--redis-delay-ms",
        type=float,
        default=0.0,
        help="each way's delay between the proxies and Redis (a relay process): Redis off this host",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REF",
        help="also run the proxies of commit REF (e.g. the commit before a refactor), side by side as "
        "<name>@base, and print this tree's added latency against REF's",
    )
    parser.add_argument("--serve-floor", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--relay-target", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--floor-backend", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend is not None:
        serve_backend(args.serve_backend, args.gap_ms / 1000)
        return 0
    if args.serve_floor is not None:
        serve_floor(args.serve_floor, args.floor_backend)
        return 0
    if args.serve_relay is not None:
        serve_relay(args.serve_relay, args.relay_target, args.redis_delay_ms / 1000)
        return 0
    began = time.monotonic()
    log_dir = ROOT / "results" / "bench_proxy_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="bench-baseline-")
    base_dir = Path(scratch.name) if args.baseline else None
    base_commit = baseline_tree(args.baseline, base_dir) if base_dir is not None else None
    if base_commit:
        print(f"baseline: {args.baseline} = {base_commit[:12]} (proxies named *{BASE})")
    env, status = None, "Rust routers skipped (--no-rust-routers)"
    if not args.no_rust_routers:
        env, status = ensure_router_env(args.routers_venv, sys.executable, log_dir / "routers-install.log")
        if env is None:
            print(f"continuing without the Rust routers: {status}")
            status = f"Rust routers left out: {status}"
    backend_port = free_port()
    backend = ServiceProcess(
        name="backend",
        args=[sys.executable, __file__, "--serve-backend", str(backend_port), "--gap-ms", str(args.gap_ms)],
        url=f"http://127.0.0.1:{backend_port}",
        log_path=log_dir / "backend.log",
        die_with_parent=True,
    )
    services: list[ServiceProcess] = [backend]
    targets: list[tuple[str, str, ServiceProcess | None]] = [("direct", backend.url, None)]
    routers: list[str] = []
    try:
        backend.start()
        redis, redis_url = start_redis(log_dir)
        services.append(redis)
        if args.redis_delay_ms > 0:
            relay = start_relay(log_dir, redis_url, args.redis_delay_ms)
            services.append(relay)
            redis_url = relay.url
        proxies: list[tuple[str, list[str]]] = [
            ("proxy-memory", []),
            # a key prefix each: two fleets, not two replicas of one (whose programs would be shared)
            ("proxy-redis", ["--redis-url", redis_url, "--redis-key-prefix", "ahead"]),
            (
                "proxy-redis-wait",
                ["--redis-url", redis_url, "--redis-key-prefix", "wait", "--no-starts-ahead"],
            ),
        ]
        for name, extra in proxies:
            services.append(start_proxy(name, log_dir, backend.url, extra))
            targets.append((name, services[-1].url, services[-1]))
            if base_dir is not None:
                base = start_proxy(f"{name}{BASE}", log_dir, backend.url, baseline_flags(extra), base_dir)
                services.append(base)
                targets.append((base.name, base.url, base))
        if not args.no_floor:
            services.append(start_floor(log_dir, backend.url))
            targets.append((FLOOR, services[-1].url, services[-1]))
        if env is not None:
            for name, router in start_routers(env, backend.url, log_dir, (BODY, GAP_BODY)):
                services.append(router)
                targets.append((name, router.url, router))
                routers.append(name)
            versions = ", ".join(f"{name} {version}" for name, version in env.versions.items())
            status = f"{versions or status}; started: {', '.join(routers) or 'none'}"
        rows = measure(targets, args)
    except ServiceStartError as exc:
        print(f"a service did not start: {exc}")
        return 1
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        for service in reversed(services):
            service.stop()
        scratch.cleanup()
    add_differences(rows)
    print_tables(rows, args.gap_ms)
    against_base = compare_with_baseline(rows)
    if against_base:
        print_baseline(against_base, args.baseline, base_commit or "")
    summary = evaluate(rows, routers, args.rate, args.gap_ms, status)
    print_summary(summary, status)
    wall = time.monotonic() - began
    rust_routers = {
        "status": status,
        "venv": None if args.no_rust_routers else str(args.routers_venv),
        "versions": env.versions if env else {},
        "commands": {name: service.args for name, _url, service in targets if name in routers and service},
    }
    report = {
        **{key: getattr(args, key) for key in ("seconds", "rounds", "rate", "gap_ms", "redis_delay_ms")},
        "wall_seconds": wall,
        "rust_routers": rust_routers,
        "rows": rows,
        "summary": summary,
        "baseline": {"ref": args.baseline, "commit": base_commit, "rows": against_base},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
