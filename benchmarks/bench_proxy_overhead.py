"""The proxy's added latency and throughput against an instantly answering backend.

Starts, as separate processes on loopback: a tiny aiohttp backend that answers chat completions at once
(non-streaming JSON, or a short SSE stream), a ``redis-server``, and ``autellix proxy`` with the memory
table and then with the Redis table. A closed-loop aiohttp client (this process) sends chat
completions at concurrency 1 and 32, streaming and not, directly to the backend and through each
proxy; at concurrency 32 twice: paced at ``--rate`` requests/s (loaded, not saturated: the
added-latency figure) and back to back (saturated: the requests/s figure, where latency is queueing,
by Little's law).

Figures: latency p50/p99 per configuration; the proxy's added latency (proxy percentile minus the
direct percentile at the same concurrency and mode); requests/s; and the proxy process's CPU time
per request, which other load on the machine does not move (one proxy process on a free core serves
about 1e6 / that many requests/s). Targets (issue 5): added p50 <= 1 ms at concurrency 1, added p99
<= 5 ms at concurrency 32, >= 1,500 requests/s for one proxy process. All processes share this
machine's cores, so the client and the backend take CPU from the proxy.
(Comparing with the Rust routers ``vllm-router`` / ``smg`` is a later step.)

Each configuration runs ``--rounds`` times, interleaved with the others, and the figures are medians
(other work on a shared machine comes and goes; interleaving spreads it over every configuration).

Usage: ``.venv/bin/python benchmarks/bench_proxy_overhead.py [--seconds 2] [--rounds 3] [--rate 1500]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autellix.launch import ServiceProcess, autellix_command, free_port  # noqa: E402

BODY = {"model": "bench", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"o"}}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"k"}}]}\n\n',
    b"data: [DONE]\n\n",
]


# --- the instant backend (run in its own process with --serve-backend PORT) ---------------------------


def serve_backend(port: int) -> None:
    reply = json.dumps(REPLY).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for chunk in CHUNKS:
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(body=reply, content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the load generator ---------------------------------------------------------------------------


async def closed_loop(
    url: str, concurrency: int, stream: bool, seconds: float, rate: float | None = None
) -> dict[str, float]:
    """``concurrency`` workers send back to back; with ``rate`` each is paced to ``rate / concurrency``
    requests/s (a worker that falls behind sends at once), so the proxy is loaded but not saturated."""
    payload = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(program: str) -> None:
            nonlocal errors
            began = time.perf_counter()
            async with session.post(url, data=payload, headers={**headers, "X-Program-Id": program}) as reply:
                await reply.read()
                if reply.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - began)

        for i in range(50):  # warm-up: connections, scripts, caches
            await one(f"warm-{i % 4}")
        latencies.clear()
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
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "requests": len(ordered),
        "errors": errors,
        "requests_per_s": len(ordered) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_redis(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    log = (log_dir / "redis.log").open("ab")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(0.3)
    return process, f"redis://127.0.0.1:{port}/0"


def start_proxy(log_dir: Path, backend: str, extra: list[str]) -> ServiceProcess:
    port = free_port()
    args = ["--port", str(port), "--backend", f"bench={backend}", "--log-level", "warning", *extra]
    service = ServiceProcess(
        name="proxy",
        args=autellix_command("proxy", args),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / "proxy.log",
    )
    return service.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="offered requests/s of the paced runs at concurrency 32"
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_proxy_overhead.json"))
    parser.add_argument("--serve-backend", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend is not None:
        serve_backend(args.serve_backend)
        return 0
    log_dir = ROOT / "results" / "bench_proxy_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    backend = ServiceProcess(
        name="backend",
        args=[sys.executable, __file__, "--serve-backend", str(backend_port)],
        url=backend_url,
        log_path=log_dir / "backend.log",
    ).start()
    redis_process, redis_url = start_redis(log_dir)
    rows: list[dict[str, object]] = []
    try:
        targets: list[tuple[str, str, ServiceProcess | None]] = [("direct", backend_url, None)]
        for name, extra in (("proxy-memory", []), ("proxy-redis", ["--redis-url", redis_url])):
            proxy = start_proxy(log_dir, backend_url, extra)
            targets.append((name, proxy.url, proxy))
        runs: dict[tuple[str, int, str, bool], list[dict[str, float]]] = {}
        for _round in range(args.rounds):  # interleaved rounds, medians: other load on the machine moves
            for concurrency, rate in ((1, None), (32, args.rate), (32, None)):
                for stream in (False, True):
                    for name, url, service in targets:
                        pid = service.process.pid if service is not None and service.process else None
                        cpu_before = cpu_seconds(pid) if pid else 0.0
                        result = asyncio.run(
                            closed_loop(url + "/v1/chat/completions", concurrency, stream, args.seconds, rate)
                        )
                        if pid:  # warm-up requests included: a slight overestimate
                            result["proxy_cpu_us_per_request"] = (
                                (cpu_seconds(pid) - cpu_before) / (result["requests"] + 50) * 1e6
                            )
                        load = f"paced {rate:.0f}/s" if rate else "max"
                        runs.setdefault((name, concurrency, load, stream), []).append(result)
        for (name, concurrency, load, stream), results in runs.items():
            merged = {key: statistics.median(r[key] for r in results) for key in results[0]}
            rows.append(
                {"target": name, "concurrency": concurrency, "load": load, "stream": stream, **merged}
            )
    finally:
        for _name, _url, service in targets:
            if service is not None:
                service.stop()
        backend.stop()
        redis_process.kill()
    direct = {(r["concurrency"], r["load"], r["stream"]): r for r in rows if r["target"] == "direct"}
    print(
        f"{'target':<14}{'conc':>5}{'load':>13}{'stream':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'cpu us/req':>11}"
    )
    for row in rows:
        base = direct[(row["concurrency"], row["load"], row["stream"])]
        row["added_p50_ms"] = float(row["p50_ms"]) - float(base["p50_ms"])  # type: ignore[arg-type]
        row["added_p99_ms"] = float(row["p99_ms"]) - float(base["p99_ms"])  # type: ignore[arg-type]
        print(
            f"{row['target']:<14}{row['concurrency']:>5}{row['load']:>13}{row['stream']!s:>8}"
            f"{row['requests_per_s']:>9.0f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['added_p50_ms']:>9.2f}{row['added_p99_ms']:>9.2f}"
            f"{row.get('proxy_cpu_us_per_request', float('nan')):>11.0f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"seconds": args.seconds, "rounds": args.rounds, "rate": args.rate, "rows": rows}
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
