"""Latency the sidecar adds to a call, against an engine that answers at once.

An "instant engine" (a tiny aiohttp server started by this script in its own process) answers every
completion immediately: JSON for non-streamed calls, five SSE chunks plus usage and ``[DONE]`` for
streamed ones, and vLLM-named gauges on ``/metrics`` for the sidecar's probes. A real ``autellix
sidecar`` process sits in front of it. One client sends calls one at a time, alternating blocks of
direct and sidecar calls so that drift hits both alike, and measures time to the last byte.

Figures (milliseconds): p50 / p99 / mean latency direct and through the sidecar, and the added latency
(sidecar minus direct) at p50 and p99, for non-streamed and streamed calls; then requests/s with
``--concurrency`` clients in parallel. Target: added p50 <= 1 ms.

Run: ``.venv/bin/python benchmarks/bench_sidecar_overhead.py [--calls 2000] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import aiohttp
from aiohttp import web

from autellix.launch import ServiceProcess, autellix_command, free_port

TARGET_P50_MS = 1.0
BODY = {"model": "m", "prompt": "hello", "max_tokens": 5}
REPLY = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "m",
    "choices": [{"index": 0, "text": " a b c d e", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7},
}


# ----- the instant engine (runs in a child process) ---------------------------------------------------


RUNNING = web.AppKey("running", list)  # one-item list: the number of calls being answered


async def _complete(request: web.Request) -> web.StreamResponse:
    running = request.app[RUNNING]
    running[0] += 1
    try:
        return await _answer(request)
    finally:
        running[0] -= 1


async def _answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(REPLY)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in ("a", "b", "c", "d", "e"):
        chunk = {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": " " + word}]}
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"id": "cmpl-1", "choices": [], "usage": REPLY["usage"]}
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _metrics(request: web.Request) -> web.Response:
    # An engine with unbounded batch: everything it holds is running, nothing waits.
    running = request.app[RUNNING][0]
    return web.Response(text=f"vllm:num_requests_running {running}\nvllm:num_requests_waiting 0\n")


async def _health(_request: web.Request) -> web.Response:
    return web.Response()


def serve_instant_engine(port: int) -> None:
    app = web.Application()
    app[RUNNING] = [0]
    app.router.add_post("/v1/completions", _complete)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ----- the measurement ---------------------------------------------------------------------------------


async def one_call(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with session.post(url + "/v1/completions", json=body) as reply:
        await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url} answered {reply.status}")
    return (time.perf_counter() - started) * 1000.0


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "mean_ms": statistics.fmean(ordered),
    }


async def sequential(urls: dict[str, str], calls: int, stream: bool, block: int = 50) -> dict[str, Any]:
    body = {**BODY, "stream": stream}
    samples: dict[str, list[float]] = {name: [] for name in urls}
    async with aiohttp.ClientSession() as session:
        for url in urls.values():  # warm up connections and code paths
            for _ in range(50):
                await one_call(session, url, body)
        for _ in range(calls // block):
            for name, url in urls.items():
                for _ in range(block):
                    samples[name].append(await one_call(session, url, body))
    result: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    result["added_p50_ms"] = result["sidecar"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["sidecar"]["p99_ms"] - result["direct"]["p99_ms"]
    return result


async def throughput(url: str, concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one_call(session, url, BODY)
            done += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per path and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--out", default="results/bench_sidecar_overhead.json")
    parser.add_argument("--serve-instant-engine", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_instant_engine:
        serve_instant_engine(args.serve_instant_engine)
        return 0
    logs = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    engine_port, sidecar_port = free_port(), free_port()
    engine = ServiceProcess(
        "instant-engine",
        [sys.executable, __file__, "--serve-instant-engine", str(engine_port)],
        f"http://127.0.0.1:{engine_port}",
        logs / "engine.log",
    )
    sidecar = ServiceProcess(
        "sidecar",
        autellix_command(
            "sidecar",
            [
                "--port",
                str(sidecar_port),
                "--engine-url",
                engine.url,
                "--engine-kind",
                "vllm",
                "--log-level",
                "warning",
            ],
        ),
        f"http://127.0.0.1:{sidecar_port}",
        logs / "sidecar.log",
    )
    try:
        engine.start()
        sidecar.start()
        urls = {"direct": engine.url, "sidecar": sidecar.url}
        results: dict[str, Any] = {
            "non_streaming": asyncio.run(sequential(urls, args.calls, stream=False)),
            "streaming": asyncio.run(sequential(urls, args.calls, stream=True)),
            "throughput_rps": {
                name: asyncio.run(throughput(url, args.concurrency, args.seconds))
                for name, url in urls.items()
            },
        }
    finally:
        sidecar.stop()
        engine.stop()
    results["config"] = {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "target_added_p50_ms": TARGET_P50_MS,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for mode in ("non_streaming", "streaming"):
        row = results[mode]
        print(
            f"{mode:>14}: direct p50 {row['direct']['p50_ms']:.3f} ms p99 {row['direct']['p99_ms']:.3f} ms | "
            f"sidecar p50 {row['sidecar']['p50_ms']:.3f} ms p99 {row['sidecar']['p99_ms']:.3f} ms | "
            f"added p50 {row['added_p50_ms']:.3f} ms p99 {row['added_p99_ms']:.3f} ms"
        )
    rps = results["throughput_rps"]
    print(
        f"    throughput: direct {rps['direct']:.0f} req/s, sidecar {rps['sidecar']:.0f} req/s "
        f"({args.concurrency} clients)"
    )
    verdict = "meets" if results["non_streaming"]["added_p50_ms"] <= TARGET_P50_MS else "misses"
    print(f"added p50 {verdict} the target of {TARGET_P50_MS} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
