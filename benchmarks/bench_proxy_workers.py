"""Requests/s of ``autellix proxy --workers N`` at concurrency 32: 1 worker against 2, side by side in
one run (issue 13 part 5).

Starts, as separate processes on loopback: the instant backend of bench_proxy_overhead.py (answers chat
completions at once, non-streaming), a ``redis-server``, and two proxies on the Redis table: one with
``--workers 1`` and one with ``--workers 2``. A closed-loop aiohttp client in this process (the same
``closed_loop`` as bench_proxy_overhead.py) sends back to back at concurrency 32, each worker a program
of its own, for ``--seconds`` per configuration; ``--rounds`` rounds interleave the two proxies (their
order alternating) and the figures are medians of the rounds. Figures: requests/s, p50/p99 latency,
errors, and the ratio of 2 workers' requests/s to 1 worker's.

Read it with the machine in mind: the client, the backend, Redis and the workers share its cores. On
a 2-core machine the client and the backend alone take about one core, so a second worker has little
idle CPU to use and the ratio stays far below 2; it shows whether a second worker adds throughput
where there is CPU for it, not what it adds on a dedicated node. The script prints ``os.cpu_count()``
beside the figures.

Usage: ``.venv/bin/python benchmarks/bench_proxy_workers.py [--seconds 3] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy_overhead import BODY, closed_loop, start_redis  # noqa: E402
from rust_routers import wait_answering  # noqa: E402

from autellix.launch import ServiceProcess, autellix_command, free_port  # noqa: E402

CONCURRENCY = 32
WORKERS = (1, 2)


def start_backend(log_dir: Path) -> ServiceProcess:
    port = free_port()
    backend = ServiceProcess(
        name="backend",
        args=[
            sys.executable,
            str(Path(__file__).parent / "bench_proxy_overhead.py"),
            "--serve-backend",
            str(port),
        ],
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / "backend.log",
        die_with_parent=True,
    )
    return backend.start()


def start_proxy(workers: int, log_dir: Path, backend: str, redis_url: str) -> ServiceProcess:
    port = free_port()
    args = ["--port", str(port), "--backend", f"bench={backend}", "--log-level", "warning", "--redis-url",
            redis_url, "--redis-key-prefix", f"bench-w{workers}", "--workers", str(workers)]  # fmt: skip
    proxy = ServiceProcess(
        name=f"proxy-w{workers}",
        args=autellix_command("proxy", args),
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"proxy-w{workers}.log",
        die_with_parent=True,
    )
    proxy.start()
    wait_answering(proxy, (BODY,))
    return proxy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_proxy_workers.json"))
    args = parser.parse_args()
    log_dir = ROOT / "results" / "bench_proxy_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    started: list[ServiceProcess] = []
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in WORKERS}
    try:
        backend = start_backend(log_dir)
        started.append(backend)
        redis, redis_url = start_redis(log_dir)
        started.append(redis)
        proxies = {n: start_proxy(n, log_dir, backend.url, redis_url) for n in WORKERS}
        started.extend(proxies.values())
        for round_index in range(args.rounds):
            order = WORKERS if round_index % 2 == 0 else tuple(reversed(WORKERS))
            for n in order:
                url = proxies[n].url + "/v1/chat/completions"
                result = asyncio.run(closed_loop(url, CONCURRENCY, False, args.seconds))
                runs[n].append(result)
                rate, p50, errors = result["requests_per_s"], result["p50_ms"], result["errors"]
                print(f"round {round_index + 1}: {n} worker(s): {rate:.0f} req/s, p50 {p50:.2f} ms, "
                      f"errors {errors:.0f}", flush=True)  # fmt: skip
    finally:
        for service in reversed(started):
            service.stop()
    rows: list[dict[str, Any]] = []
    for n in WORKERS:
        rows.append({
            "workers": n,
            "concurrency": CONCURRENCY,
            "requests_per_s": statistics.median(r["requests_per_s"] for r in runs[n]),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs[n]),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs[n]),
            "errors": sum(r["errors"] for r in runs[n]),
            "rounds": runs[n],
        })  # fmt: skip
    ratio = rows[1]["requests_per_s"] / rows[0]["requests_per_s"]
    print(f"\nconcurrency {CONCURRENCY}, non-streaming, Redis table, {os.cpu_count()} CPU(s), "
          f"medians of {args.rounds} rounds of {args.seconds:g} s")  # fmt: skip
    print(f"{'workers':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in rows:
        figures = f"{row['requests_per_s']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        print(f"{row['workers']:>8} {figures} {row['errors']:>7}")
    print(f"2 workers / 1 worker: {ratio:.2f}x requests/s")
    report = {
        "benchmark": "bench_proxy_workers",
        "cpu_count": os.cpu_count(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": rows,
        "ratio_2_over_1": ratio,
        "wall_seconds": time.monotonic() - began,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
