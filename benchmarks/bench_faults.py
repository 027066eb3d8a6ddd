"""Faults under live load, on real processes (issue 15 part 2): what clients see and how the fleet heals.

Each scenario runs on a fresh stack (fault_load.py: Redis, two simulated engines at ``--time-scale``,
a sidecar each, two proxy replicas sharing Redis, every process on loopback) under a bounded load:
``--programs`` concurrent programs of chat calls (half streamed, 40-160 forced output tokens, so
0.5-2 s a call at time scale 1), the client failing over between the two proxy URLs on connect
errors, as a load balancer would. After ``--warmup`` seconds the fault:

- ``engine-kill``: kill -9 engine e0; restarted on its port after ``--down-seconds``;
- ``engine-stop``: SIGSTOP engine e0 for ``--stop-seconds`` (default 20), then SIGCONT;
- ``redis-restart``: kill -9 the shared redis-server; started again empty after ``--down-seconds``;
- ``proxy-kill``: kill -9 proxy replica 1; restarted after ``--down-seconds``;
- ``sidecar-kill``: kill -9 e0's sidecar; restarted on its port after ``--down-seconds``.

The load goes on until the faulty part is back in every proxy's view (at most ``--settle`` seconds),
then ``--tail`` seconds more, then stops; every call sent is waited for. Per scenario it prints and
writes: calls sent, completed, failed before their first byte (the proxy answered an error: target
0, such calls must be retried on the other engine), streams broken (each must end with an error
event), calls cut off (the connection closed with no error event: expected only for calls in flight on
a proxy that was killed), hung calls (no end within ``--call-timeout``), slow calls (ok but longer than
``--slow-seconds``), the client's failovers; the time from the fault until the proxies ejected the
faulty backend (both replicas' ``GET /ready`` say unhealthy; for Redis: both degraded; for a proxy:
it stops answering) and from the recovery until they readmitted it; and whether the program table is
consistent afterwards: once the load has stopped, every per-engine load count, in Redis and in each
proxy's and sidecar's metrics, must reach 0 within the lease TTL plus two gc intervals.

Usage: ``.venv/bin/python benchmarks/bench_faults.py [--scenario NAME ...] [--stop-seconds 20]``
(about 2 minutes for all five with the defaults, on 2 cores). JSON: ``results/bench_faults.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_load import (  # noqa: E402
    LoadShape,
    Stack,
    Watcher,
    latency_summary,
    proxy_counters,
    run_load,
    wait_consistent,
)

from autellix.launch import wait_backends_healthy  # noqa: E402

SCENARIOS = ("engine-kill", "engine-stop", "redis-restart", "proxy-kill", "sidecar-kill")
LEASE_TTL = 15.0  # the proxy's default --lease-ttl
GC_INTERVAL = 5.0  # the proxy's default --gc-interval


@dataclass(frozen=True, slots=True)
class Fault:
    """One scenario: break a part, hold, bring it back; what each proxy's ``/ready`` shows meanwhile."""

    brk: Callable[[], None]
    heal: Callable[[], None]
    hold: float  # seconds between the two
    watch: str  # the watcher's key (fault_load.Watcher)
    bad: object  # its value while the part is out
    good: object  # and once it is back
    proxy: int | None = None  # only this proxy's view (None: every proxy)


def make_fault(name: str, stack: Stack, args: argparse.Namespace) -> Fault:
    def signal_engine(sig: signal.Signals) -> Callable[[], None]:
        def send() -> None:
            process = stack.engines[0].process
            assert process is not None
            os.killpg(process.pid, sig)

        return send

    def kill_redis() -> None:
        assert stack.redis is not None
        stack.redis.kill()

    def restart_proxy() -> None:
        wait_backends_healthy(stack.restart(stack.proxies[1]))

    down = args.down_seconds
    if name == "engine-kill":
        return Fault(stack.engines[0].kill, lambda: _void(stack.restart(stack.engines[0])), down,
                     "backend:e0", False, True)  # fmt: skip
    if name == "engine-stop":
        return Fault(signal_engine(signal.SIGSTOP), signal_engine(signal.SIGCONT), args.stop_seconds,
                     "backend:e0", False, True)  # fmt: skip
    if name == "redis-restart":
        return Fault(kill_redis, stack.start_redis, down, "table", "degraded", "redis")
    if name == "proxy-kill":
        return Fault(stack.proxies[1].kill, restart_proxy, down, "up", False, True, proxy=1)
    if name == "sidecar-kill":
        return Fault(stack.sidecars[0].kill, lambda: _void(stack.restart(stack.sidecars[0], "/ready")), down,
                     "backend:e0", False, True)  # fmt: skip
    raise ValueError(name)


def _void(_value: object) -> None:
    return None


async def run_scenario(name: str, args: argparse.Namespace, log_root: Path) -> dict[str, Any]:
    stack = Stack(log_root / name, time_scale=args.time_scale)
    await asyncio.to_thread(stack.start)
    try:
        return await _drive(name, stack, args)
    finally:
        await asyncio.to_thread(stack.stop)


async def _drive(name: str, stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    fault = make_fault(name, stack, args)
    urls = [proxy.url for proxy in stack.proxies]
    shape = LoadShape(programs=args.programs, call_timeout=args.call_timeout, seed=args.seed)
    began = time.monotonic()
    stop_load, stop_watch = asyncio.Event(), asyncio.Event()
    watcher = Watcher(urls, began)
    watching = asyncio.create_task(watcher.run(stop_watch))
    loading = asyncio.create_task(run_load(urls, shape, stop_load, began))
    await asyncio.sleep(args.warmup)
    broken_at = time.monotonic() - began
    await asyncio.to_thread(fault.brk)
    await asyncio.sleep(fault.hold)
    healing_at = time.monotonic() - began
    await asyncio.to_thread(fault.heal)
    healed_at = time.monotonic() - began  # the part answers again (restarts wait for its health)
    deadline = time.monotonic() + args.settle
    while (
        time.monotonic() < deadline
        and watcher.first(fault.watch, fault.good, healing_at, fault.proxy) is None
    ):
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.tail)
    stop_load.set()
    stats = await loading
    load_ended = time.monotonic()
    stop_watch.set()
    await watching
    counters = await proxy_counters(stack)
    state, settled = await wait_consistent(stack, load_ended + LEASE_TTL + 2 * GC_INTERVAL + 5.0)
    ejected = watcher.first(fault.watch, fault.bad, broken_at, fault.proxy)
    readmitted = watcher.first(fault.watch, fault.good, healing_at, fault.proxy)
    counts = stats.counts()
    calls = stats.calls
    streams = [c for c in calls if c.stream]
    slow = [c for c in calls if c.outcome == "ok" and c.latency > args.slow_seconds]
    during = [c for c in calls if broken_at - 2.0 <= c.sent <= healed_at + 5.0]
    return {
        "scenario": name,
        "fault_at_s": broken_at,
        "hold_s": healing_at - broken_at,
        "recovered_at_s": healed_at,
        "restart_s": healed_at - healing_at,
        "calls_sent": len(calls),
        "completed": counts["ok"],
        "failed_before_first_byte": counts["error_status"] + counts["no_proxy"],
        "streams": len(streams),
        "streams_broken_with_error_event": counts["stream_error_event"],
        "cut_off": counts["cut_off"],
        "cut_off_streams": sum(1 for c in streams if c.outcome == "cut_off"),
        "hung": counts["hung"],
        "slow": len(slow),
        "slow_sent_before_eject": sum(1 for c in slow if ejected is None or c.sent < ejected),
        "client_failovers": stats.failovers,
        "proxy_retries": counters.get("retries", 0.0),
        "proxy_counters": counters,
        "outcomes": counts,
        "errors": sorted({f"{c.outcome}: {c.detail}" for c in calls if c.outcome != "ok"})[:20],
        "eject_s": None if ejected is None else ejected - broken_at,
        "readmit_s": None
        if readmitted is None
        else readmitted - healing_at,  # from the start of the recovery
        "watched": {"what": fault.watch, "proxy": fault.proxy},
        "latency_ok": latency_summary(calls),
        "latency_ok_around_fault": latency_summary(during),
        "table_consistent": settled is not None,
        "table_consistent_after_s": settled,
        "table_state": state,
        "watch_events": [list(event) for event in watcher.events],
    }


def describe(row: dict[str, Any]) -> str:
    def secs(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    lat = row["latency_ok"]
    lines = [
        f"{row['scenario']}: fault at {row['fault_at_s']:.1f} s, held {row['hold_s']:.1f} s, back "
        f"{row['restart_s']:.1f} s later",
        f"  calls sent {row['calls_sent']}, completed {row['completed']}, failed before first byte "
        f"{row['failed_before_first_byte']}, streams broken with error event "
        f"{row['streams_broken_with_error_event']} (of {row['streams']} streams), cut off {row['cut_off']} "
        f"({row['cut_off_streams']} streams), hung {row['hung']}, slow {row['slow']} "
        f"({row['slow_sent_before_eject']} sent before the ejection), client failovers "
        f"{row['client_failovers']}, retried by the proxies {row['proxy_retries']:.0f}",
        f"  eject ({row['watched']['what']}) {secs(row['eject_s'])} after the fault, readmit "
        f"{secs(row['readmit_s'])} after the recovery began; ok latency mean {lat.get('mean', 0):.2f} s, "
        f"P95 {lat.get('p95', 0):.2f} s, max {lat.get('max', 0):.2f} s",
        f"  table consistent after the load: {'yes' if row['table_consistent'] else 'NO'}"
        + (
            f" ({row['table_consistent_after_s']:.1f} s)"
            if row["table_consistent"]
            else f": {row['table_state']}"
        ),
    ]
    lines += [f"  {error}" for error in row["errors"][:6]]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    log_root = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    print(f"logs under {log_root}", flush=True)
    rows = []
    for name in args.scenario:
        row = await run_scenario(name, args, log_root)
        print(describe(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--stop-seconds", type=float, default=20.0, help="engine-stop: SIGSTOP this long")
    parser.add_argument("--down-seconds", type=float, default=5.0, help="a killed part restarts after this")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before the fault")
    parser.add_argument("--settle", type=float, default=20.0, help="at most this long for readmission")
    parser.add_argument("--tail", type=float, default=3.0, help="load after readmission")
    parser.add_argument("--programs", type=int, default=6, help="concurrent programs")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the engines' --time-scale")
    parser.add_argument("--call-timeout", type=float, default=60.0, help="a call longer than this hung")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="an ok call longer than this is slow")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_faults.json"))
    args = parser.parse_args()
    began = time.monotonic()
    rows = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "bench_faults", "config": vars(args), "cpu_count": os.cpu_count(),
              "wall_seconds": time.monotonic() - began, "scenarios": rows}  # fmt: skip
    out.write_text(json.dumps(report, indent=2))
    print(f"wall {time.monotonic() - began:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
