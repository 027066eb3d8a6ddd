"""CPU the sidecar spends per streamed token on a resumable call (``--preempt``; issue 14 item 3).

A resumable call's stream passes every SSE event through resume.py's ``ResumeSession.rewrite`` (token
ids recorded and hidden from the client) before sse.py's relay; any other call's events go through the
relay alone. This script feeds the same number of chat content chunks, built by the simulated engine's
own chunk builder (vLLM 0.32's shapes), through three pipelines in this process and prints the process
CPU time per chunk: the plain relay (chunks without token ids), the resumable relay with its per-token
fast path, and the resumable relay decoding every chunk (the fast path switched off), best of
``--repeats`` runs. Pure code, no sockets: the figures are the relay's own cost, not the network's.

Run: ``.venv/bin/python benchmarks/bench_resume_relay.py [--chunks 20000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from autellix.engine_adapters.resume import ResumeSession
from autellix.engine_adapters.sse import SseRelay
from autellix.engine_adapters.vllm import VllmAdapter
from autellix.simulator.openai_api import StreamHeader, sse


def per_chunk_us(events: list[bytes], rewrite: Callable[[bytes], bytes | None] | None) -> float:
    relay = SseRelay(False, VllmAdapter().read_usage, rewrite=rewrite)
    started = time.process_time()
    for event in events:
        relay.feed(event)
    return (time.process_time() - started) / len(events) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    header = StreamHeader("chat", "bench", 1700000000, "sim-llama")
    plain = [sse(header.role_chunk(None))]
    plain += [sse(header.delta_chunk(" word", None, None)) for _ in range(args.chunks)]
    with_ids = [sse(header.role_chunk([1, 2, 3]))]
    with_ids += [sse(header.delta_chunk(" word", [i % 1000], None)) for i in range(args.chunks)]
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": args.chunks + 1, "stream": True}

    def fast() -> float:
        return per_chunk_us(with_ids, ResumeSession("chat", "/v1/chat/completions", body).rewrite)

    def decoding() -> float:
        session = ResumeSession("chat", "/v1/chat/completions", body)
        session._fast = lambda event: None  # type: ignore[method-assign]
        return per_chunk_us(with_ids, session.rewrite)

    figures = {
        "plain relay": min(per_chunk_us(plain, None) for _ in range(args.repeats)),
        "resumable, fast path": min(fast() for _ in range(args.repeats)),
        "resumable, decoding every chunk": min(decoding() for _ in range(args.repeats)),
    }
    print(f"CPU per streamed chunk, best of {args.repeats} runs of {args.chunks} chunks:")
    for name, value in figures.items():
        print(f"  {name:<32} {value:6.1f} us")
    added = figures["resumable, fast path"] - figures["plain relay"]
    print(f"  resumable relay adds {added:.1f} us a chunk (fast path)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
