"""Soak (issue 15 part 3): mixed load for ``--minutes`` through the whole stack; memory, errors, drift.

The stack of fault_load.py (Redis, two simulated engines at ``--time-scale``, a sidecar each, two proxy
replicas sharing Redis) under ``--programs`` concurrent programs of chat calls, streamed and not, of
1-11 calls each (mean 6), 40-160 forced output tokens, the client spreading programs over both
proxies; nothing is broken on purpose. Printed and written:

- the resident set size (``VmRSS`` from ``/proc/PID/status``) of every process at the start (the stack
  up, before any call), after the warm-up (``--warmup-seconds``, default one minute: start-up RSS is not
  steady state, caches and pools fill with the first calls) and at the end, with the growth from each
  to the end; target: < 10% from the warm-up to the end for every process; samples every
  ``--sample-seconds`` in the JSON;
- calls by outcome (fault_load.OUTCOMES) and the distinct error messages;
- the latency of completed calls sent in the first and in the last minute (mean and P95) and their
  ratio (drift: a leak or a growing table would show as a slower last minute);
- whether the program table is consistent once the load stops (every per-engine count back to 0).

Programs stay in the table until ``--program-ttl`` seconds idle (the proxy's default: 600 s), so in a
soak no longer than that the proxies' and Redis' memory grows with every program by design;
``--program-ttl 120`` lets the table reach its steady state within the warm-up and a half, and what
still grows after that is a leak.

Usage: ``.venv/bin/python benchmarks/bench_soak.py [--minutes 10] [--program-ttl S]`` (the minutes
plus ~30 s).
JSON: ``results/bench_soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_load import LoadShape, LoadStats, Stack, latency_summary, run_load, wait_consistent  # noqa: E402

TARGET_GROWTH = 0.10


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB (Linux), None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def sample(stack: Stack) -> dict[str, int | None]:
    return {s.name: rss_kib(s.process.pid) if s.process is not None else None for s in stack.all()}


def growth(before: dict[str, int | None], after: dict[str, int | None]) -> dict[str, float | None]:
    return {
        name: (after[name] or 0) / value - 1.0 if value and after.get(name) else None
        for name, value in before.items()
    }


async def soak(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    urls = [proxy.url for proxy in stack.proxies]
    shape = LoadShape(programs=args.programs, call_timeout=args.call_timeout, seed=args.seed)
    duration = args.minutes * 60.0
    warmup = min(args.warmup_seconds, duration / 3)
    samples: list[tuple[float, dict[str, int | None]]] = []
    began = time.monotonic()
    samples.append((0.0, sample(stack)))
    stop = asyncio.Event()
    live = LoadStats()
    loading = asyncio.create_task(run_load(urls, shape, stop, began, live))
    warm: dict[str, int | None] | None = None
    next_sample = args.sample_seconds
    while (elapsed := time.monotonic() - began) < duration:
        if warm is None and elapsed >= warmup:
            warm = sample(stack)
            samples.append((elapsed, warm))
        elif elapsed >= next_sample:
            samples.append((elapsed, sample(stack)))
            next_sample += args.sample_seconds
            counts = live.counts()
            rss = ", ".join(f"{p.name} {samples[-1][1][p.name]}" for p in stack.proxies)
            print(
                f"  {elapsed:5.0f} s: {len(live.calls)} calls, {counts['ok']} ok; RSS KiB {rss}", flush=True
            )
        await asyncio.sleep(min(1.0, max(0.0, duration - elapsed)))
    end = sample(stack)
    samples.append((time.monotonic() - began, end))
    stop.set()
    stats = await loading
    load_ended = time.monotonic()
    state, settled = await wait_consistent(stack, load_ended + 30.0)
    assert warm is not None
    calls = stats.calls
    minute = min(60.0, duration / 3)
    first = [c for c in calls if c.sent < minute]
    last_start = max(c.sent for c in calls) - minute if calls else 0.0
    last = [c for c in calls if c.sent >= last_start]
    first_lat, last_lat = latency_summary(first), latency_summary(last)
    from_warm = growth(warm, end)
    return {
        "minutes": args.minutes,
        "warmup_seconds": warmup,
        "rss_kib": {"start": samples[0][1], "after_warmup": warm, "end": end},
        "growth_from_start": growth(samples[0][1], end),
        "growth_from_warmup": from_warm,
        "met": all(g is not None and g < TARGET_GROWTH for g in from_warm.values()),
        "calls_sent": len(calls),
        "outcomes": stats.counts(),
        "client_failovers": stats.failovers,
        "errors": sorted({f"{c.outcome}: {c.detail}" for c in calls if c.outcome != "ok"})[:30],
        "window_seconds": minute,
        "latency_first_minute": first_lat,
        "latency_last_minute": last_lat,
        "drift_mean": last_lat["mean"] / first_lat["mean"]
        if first_lat.get("n") and last_lat.get("n")
        else None,
        "drift_p95": last_lat["p95"] / first_lat["p95"] if first_lat.get("n") and last_lat.get("n") else None,
        "table_consistent": settled is not None,
        "table_state": state,
        "samples": [[t, s] for t, s in samples],
    }


def report(row: dict[str, Any]) -> None:
    print(f"\nsoak of {row['minutes']:g} min, {row['calls_sent']} calls: outcomes {row['outcomes']}, "
          f"client failovers {row['client_failovers']}")  # fmt: skip
    for error in row["errors"][:10]:
        print(f"  {error}")
    print(
        f"{'process':>14} {'start KiB':>10} {'warm KiB':>10} {'end KiB':>10} {'vs start':>9} {'vs warm':>9}"
    )
    rss = row["rss_kib"]
    for name in rss["start"]:

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value * 100:+.1f}%"

        print(f"{name:>14} {rss['start'][name] or 0:>10} {rss['after_warmup'][name] or 0:>10} "
              f"{rss['end'][name] or 0:>10} {pct(row['growth_from_start'][name]):>9} "
              f"{pct(row['growth_from_warmup'][name]):>9}")  # fmt: skip
    verdict = "met" if row["met"] else "MISSED"
    print(f"RSS growth after the warm-up ({row['warmup_seconds']:.0f} s) to the end < "
          f"{TARGET_GROWTH * 100:.0f}% for every process: {verdict}")  # fmt: skip
    first, last = row["latency_first_minute"], row["latency_last_minute"]
    if first.get("n") and last.get("n"):
        window = f"{row['window_seconds']:.0f} s"
        print(f"latency of ok calls, first {window}: mean {first['mean']:.3f} s, P95 {first['p95']:.3f} s "
              f"({first['n']} calls); last {window}: mean {last['mean']:.3f} s, P95 {last['p95']:.3f} s "
              f"({last['n']} calls); drift {row['drift_mean']:.3f}x mean, "
              f"{row['drift_p95']:.3f}x P95")  # fmt: skip
    consistent = "yes" if row["table_consistent"] else f"NO: {row['table_state']}"
    print(f"table consistent after the load: {consistent}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="RSS is compared from here")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="RSS sampled this often")
    parser.add_argument("--programs", type=int, default=8, help="concurrent programs")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the engines' --time-scale")
    parser.add_argument("--call-timeout", type=float, default=60.0, help="a call longer than this hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--program-ttl",
        type=float,
        default=None,
        help="the proxies' --program-ttl (default: theirs, 600 s); shorter than the soak, the table reaches "
        "its steady state (programs expire as fast as they arrive) and what still grows is a leak",
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_soak.json"))
    args = parser.parse_args()
    began = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"logs under {log_dir}; {os.cpu_count()} CPU(s)", flush=True)
    proxy_args = () if args.program_ttl is None else ("--program-ttl", str(args.program_ttl))
    stack = Stack(log_dir, time_scale=args.time_scale, proxy_args=proxy_args).start()
    try:
        row = asyncio.run(soak(args, stack))
    finally:
        stack.stop()
    report(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bench_soak", "config": vars(args), "cpu_count": os.cpu_count(),
                               "wall_seconds": time.monotonic() - began, **row}, indent=2))  # fmt: skip
    print(f"wall {time.monotonic() - began:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
