"""Throughput of a saturated engine, direct and through the sidecar (does admission control cost batch?).

A simulated engine (``autellix sim-engine``, unit profile: every step costs the same, scaled to
``--step-ms`` of wall time) with a batch of ``--max-num-seqs`` is kept saturated by ``--clients``
closed-loop clients (each sends its next call as soon as the previous one ends; calls of
``--tokens`` output tokens with ``ignore_eos``). The same load runs once directly against the engine and
once through an ``autellix sidecar`` (adaptive window, default settings) in front of the same engine.

Figures: completed calls/s and output tokens/s of every run, the sidecar runs' ratio to direct, the
engine's mean batch occupancy (``vllm:num_requests_running`` sampled every 50 ms, ramp-up skipped) and
mean internal queue, and the window size the sidecar settled at. A ratio near 1.0 means the window
keeps the batch full; ``--overprovision 0 1 2 4`` shows the price of a smaller slack (fewer calls
ordered by the engine instead of by us). On a 2-core machine the client, sidecar and engine share the
CPUs, so part of any gap is the sidecar's CPU time slowing the simulated engine's step loop.

Run: ``.venv/bin/python benchmarks/bench_sidecar_throughput.py [--seconds 6] [--overprovision 2 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import aiohttp

from autellix.launch import ServiceProcess, autellix_command, free_port, start_sim_engine


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


async def drive(url: str, engine_url: str, clients: int, tokens: int, seconds: float) -> dict[str, Any]:
    done = 0
    generated = 0
    running: list[float] = []
    waiting: list[float] = []
    produced: list[tuple[float, float]] = []  # (time, engine's generation_tokens_total)
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal done, generated
        rng = random.Random(index)
        call = 0
        while time.perf_counter() < deadline:
            call += 1
            length = rng.randint(max(1, tokens // 3), tokens * 5 // 3)  # mean ~ tokens, spread-out finishes
            body = {"prompt": f"client {index} call {call}", "max_tokens": length, "ignore_eos": True}
            async with session.post(url + "/v1/completions", json=body) as reply:
                data = await reply.json()
                if reply.status != 200:
                    raise RuntimeError(f"{url} answered {reply.status}: {data}")
            done += 1
            generated += data["usage"]["completion_tokens"]

    async def sample(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            async with session.get(engine_url + "/metrics") as reply:
                text = await reply.text()
            running.append(metric(text, "vllm:num_requests_running"))
            waiting.append(metric(text, "vllm:num_requests_waiting"))
            produced.append((time.perf_counter(), metric(text, "vllm:generation_tokens_total")))
            await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=clients + 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(sample(session), *(client(session, i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    skip = len(running) // 5  # the ramp-up
    settled = running[skip:] or running
    settled_waiting = waiting[skip:] or waiting
    (t0, tokens0), (t1, tokens1) = produced[skip], produced[-1]
    return {
        "calls_per_s": done / elapsed,
        "tokens_per_s": generated / elapsed,
        "engine_tokens_per_s": (tokens1 - tokens0) / (t1 - t0),  # the engine's own count, ramp-up skipped
        "mean_engine_running": statistics.fmean(settled),
        "mean_engine_waiting": statistics.fmean(settled_waiting),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--step-ms", type=float, default=20.0, help="wall milliseconds per engine step")
    parser.add_argument(
        "--overprovision",
        type=int,
        nargs="+",
        default=[0, 2, 4],
        help="sidecar slack values to run, one run each",
    )
    parser.add_argument("--out", default="results/bench_sidecar_throughput.json")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-sidecar-tput-"))
    engine_args = ["--profile", "unit", "--time-scale", str(args.step_ms / 1000)]
    engine = start_sim_engine(logs, [*engine_args, "--max-num-seqs", str(args.max_num_seqs)])
    results: dict[str, Any] = {"sidecar": {}}
    try:
        results["direct"] = asyncio.run(
            drive(engine.url, engine.url, args.clients, args.tokens, args.seconds)
        )
        for slack in args.overprovision:
            port = free_port()
            flags = ["--port", str(port), "--engine-url", engine.url, "--engine-kind", "sim"]
            sidecar = ServiceProcess(
                f"sidecar-{slack}",
                autellix_command(
                    "sidecar", [*flags, "--overprovision", str(slack), "--log-level", "warning"]
                ),
                f"http://127.0.0.1:{port}",
                logs / f"sidecar-{slack}.log",
            )
            try:
                sidecar.start()
                row = asyncio.run(drive(sidecar.url, engine.url, args.clients, args.tokens, args.seconds))
                with urllib.request.urlopen(sidecar.url + "/metrics", timeout=5) as reply:
                    row["window_size"] = metric(reply.read().decode(), "autellix_sidecar_window_size")
            finally:
                sidecar.stop()
            row["tokens_per_s_ratio"] = row["tokens_per_s"] / results["direct"]["tokens_per_s"]
            row["engine_tokens_per_s_ratio"] = (
                row["engine_tokens_per_s"] / results["direct"]["engine_tokens_per_s"]
            )
            results["sidecar"][str(slack)] = row
    finally:
        engine.stop()
    results["config"] = {**vars(args), "python": platform.python_version(), "machine": platform.machine()}
    ideal = args.max_num_seqs * 1000 / args.step_ms
    print(
        f"engine batch {args.max_num_seqs}, {args.step_ms:g} ms steps: batch-full ideal {ideal:.0f} tokens/s"
    )
    rows = [("direct", results["direct"])]
    rows += [(f"sidecar, overprovision {slack}", row) for slack, row in results["sidecar"].items()]
    for name, row in rows:
        extra = ""
        if "window_size" in row:
            extra = (
                f", window {row['window_size']:.0f}; ratio to direct {row['tokens_per_s_ratio']:.3f} "
                f"(engine-side {row['engine_tokens_per_s_ratio']:.3f})"
            )
        print(
            f"{name:>26}: {row['calls_per_s']:.1f} calls/s, {row['tokens_per_s']:.0f} tokens/s "
            f"(engine {row['engine_tokens_per_s']:.0f}), "
            f"engine running {row['mean_engine_running']:.1f} waiting {row['mean_engine_waiting']:.1f}{extra}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
