"""The live load generator against real processes on loopback: a simulated engine, and the full stack.

The engine runs the ``unit`` profile (every step costs 1.0 simulated second) at ``--time-scale 0.05``
(50 ms of wall time per step), and the runner uses the same time scale, so a call of N output tokens
takes about N simulated seconds and the records can be checked against hand-worked figures.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from autellix.launch import ServiceGroup, autellix_command, free_port, service, wait_backends_healthy
from autellix.loadgen import wire
from autellix.loadgen.arrivals import make_workload
from autellix.loadgen.live_config import workload_params
from autellix.loadgen.program import CallSpec, Message, ProgramSpec
from autellix.loadgen.runner import LiveOptions, LiveRunResult, run_programs
from autellix.records import CallRecord
from tests.integration.conftest import SimEngineFactory, metric_value

pytestmark = pytest.mark.integration

SCALE = 0.05
UNIT = ("--profile", "unit", "--time-scale", str(SCALE))


def program(
    program_id: str, calls: list[tuple[tuple[int, ...], int, float, int]], arrival: float = 0.0
) -> ProgramSpec:
    """``calls``: (parents, output tokens, tool delay in simulated s, thread) per call, in order."""
    messages = tuple(Message("user", f"{program_id} step {i}: please think.") for i in range(len(calls)))
    specs = tuple(
        CallSpec(index=i, prompt=(i,), output_tokens=tokens, parents=parents, thread=thread, tool_delay=delay)
        for i, (parents, tokens, delay, thread) in enumerate(calls)
    )
    return ProgramSpec(program_id, "custom", arrival, messages, specs)


def diamond(program_id: str, arrival: float = 0.0) -> ProgramSpec:
    """A root, three parallel threads, and a join waiting for all three."""
    return program(
        program_id,
        [((), 2, 0.0, 0), ((0,), 3, 0.0, 1), ((0,), 3, 0.0, 2), ((0,), 3, 0.0, 3), ((1, 2, 3), 2, 0.0, 0)],
        arrival,
    )


def chain(program_id: str, arrival: float = 0.0) -> ProgramSpec:
    """Three calls in a row with a 2-simulated-second tool delay before each later call."""
    return program(program_id, [((), 2, 0.0, 0), ((0,), 2, 2.0, 0), ((1,), 2, 2.0, 0)], arrival)


def by_call(result: LiveRunResult) -> dict[str, CallRecord]:
    return {c.call_id: c for c in result.calls}


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_dag_order_parallel_threads_and_every_call_completes(
    sim_engine_factory: SimEngineFactory, api: wire.Api
):
    engine = sim_engine_factory(*UNIT)
    programs = [diamond("d"), chain("c", arrival=0.5)]
    result = await run_programs(programs, LiveOptions(url=engine.url, time_scale=SCALE, api=api))
    assert result.errors == () and result.calls_cancelled == 0 and result.programs_not_started == 0
    assert result.summary.programs_completed == 2 and result.summary.calls_completed == 8
    calls = by_call(result)
    for spec in programs:
        for call in spec.calls:
            record = calls[f"{spec.program_id}/{call.index}"]
            assert record.output_tokens == call.output_tokens
            for parent in call.parents:
                # A child is issued only after each parent finished, plus its tool delay.
                gap = record.arrival - calls[f"{spec.program_id}/{parent}"].completion
                assert gap >= call.tool_delay - 0.05, (spec.program_id, call.index, parent, gap)
    threads = [calls[f"d/{i}"] for i in (1, 2, 3)]
    assert max(t.arrival for t in threads) < min(t.completion for t in threads), "threads ran one by one"
    # Hand-worked: the root takes 2 steps, the threads 3 (batched together), the join 2: ~7 s simulated.
    # Steps are paced, so ~7 s is a floor; a busy machine only adds to it (parallelism is checked above).
    records = {p.program_id: p for p in result.programs}
    assert records["d"].response_time is not None and 6.5 <= records["d"].response_time <= 30.0
    assert records["d"].output_tokens == 13
    # The chain: 3 calls x 2 steps + 2 tool delays of 2 s = ~10 s simulated.
    assert records["c"].response_time is not None and 9.5 <= records["c"].response_time <= 30.0


async def test_a_dead_port_counts_connection_errors_and_ends_each_program():
    url = f"http://127.0.0.1:{free_port()}"
    programs = [diamond("d"), chain("c", arrival=0.1)]
    result = await run_programs(programs, LiveOptions(url=url, model="any", time_scale=SCALE))
    assert result.errors_by_kind == {"connection": 2}  # each program's root, then nothing more
    assert {e.program_id for e in result.errors} == {"d", "c"}
    assert result.summary.programs == 2 and result.summary.programs_incomplete == 2
    assert result.calls == ()


async def test_the_deadline_cancels_leftovers_and_the_engine_aborts_them(
    sim_engine_factory: SimEngineFactory,
):
    engine = sim_engine_factory(*UNIT)
    long_call = program("long", [((), 500, 0.0, 0)])  # 500 steps: 25 s of wall time
    late = diamond("late", arrival=1000.0)  # would arrive after 50 s of wall time
    started = time.monotonic()
    result = await run_programs(
        [long_call, late], LiveOptions(url=engine.url, time_scale=SCALE, duration=1.0)
    )
    assert time.monotonic() - started < 10.0  # the deadline is 1 s; the long call alone would take 25 s
    assert result.calls_cancelled == 1 and result.programs_not_started == 1
    assert result.summary.programs == 1 and result.summary.programs_incomplete == 1
    deadline = time.monotonic() + 5.0
    while True:  # closing the connection aborted the request inside the engine
        with urllib.request.urlopen(engine.url + "/metrics") as reply:
            running = metric_value(reply.read().decode(), "vllm:num_requests_running")
        if running == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert running == 0


async def test_through_proxy_and_sidecars_the_proxy_sees_every_program(tmp_path: Path):
    """A small mixed workload through engine -> sidecar -> proxy; the proxy's program table must know each
    program (by the X-Program-Id the runner sent) with all of its calls completed."""
    params = workload_params("mixed", {"lats": {"calls_mean": 8, "max_iterations": 3}}, 1024)
    programs = make_workload("mixed", 6, 4.0, 7, params)
    with ServiceGroup() as group:
        engine_args = [
            "--profile",
            "a100-llama3-8b",
            "--time-scale",
            "0.05",
            "--scheduling-policy",
            "priority",
        ]
        (engine,) = group.start_all([service("sim-engine", tmp_path, engine_args)])
        sidecar_args = ["--engine-url", engine.url, "--engine-kind", "sim", "--scheduler", "atlas"]
        (sidecar,) = group.start_all([service("sidecar", tmp_path, sidecar_args)])
        (proxy,) = group.start_all([service("proxy", tmp_path, ["--backend", f"e0={sidecar.url}"])])
        wait_backends_healthy(proxy)
        options = LiveOptions(url=proxy.url, time_scale=0.05, duration=60.0, program_id_suffix="~t")
        result = await run_programs(programs, options)
        assert result.errors == () and result.summary.programs_completed == 6
        assert result.summary.calls_completed == sum(p.num_calls for p in programs)
        assert result.summary.prefix_cache_hit_rate > 0.3  # usage.prompt_tokens_details was read
        for spec in programs:
            with urllib.request.urlopen(f"{proxy.url}/v1/programs/{spec.program_id}~t") as reply:
                state = json.loads(reply.read())
            assert state["calls_completed"] == spec.num_calls, state


def test_the_loadgen_command_writes_json_and_fails_clearly(
    sim_engine_factory: SimEngineFactory, tmp_path: Path
) -> None:
    engine = sim_engine_factory("--time-scale", "0.02")
    out = tmp_path / "run.json"
    flags = ["--workload", "bfcl", "--num-programs", "3", "--rate", "5", "--time-scale", "0.02"]
    done = subprocess.run(
        [*autellix_command("loadgen", ["--url", engine.url, *flags, "--out", str(out), "--no-progress"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "live  bfcl" in done.stdout and "3/3" in done.stdout
    document = json.loads(out.read_text())
    assert document["summary"]["programs_completed"] == 3 and document["model"] == "sim-llama"
    assert document["settings"]["workload"] == "bfcl" and document["errors_by_kind"] == {}
    dead = subprocess.run(
        autellix_command("loadgen", ["--url", f"http://127.0.0.1:{free_port()}", "--out", str(out)]),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert dead.returncode == 1 and "cannot use" in dead.stderr
    bad = subprocess.run(
        autellix_command("loadgen", ["--url", "ftp://x"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "url" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("api", ["responses", "messages"])
async def test_the_other_apis_through_proxy_and_sidecar_keep_every_programs_calls(
    tmp_path: Path, api: wire.Api
):
    """Chains through engine -> sidecar -> proxy in the Responses or Messages API: the proxy's table has
    each program's calls with the tokens the sidecar read from that API's usage."""
    programs = [chain("a"), chain("b", arrival=0.2)]
    with ServiceGroup() as group:
        (engine,) = group.start_all([service("sim-engine", tmp_path, list(UNIT))])
        sidecar_args = ["--engine-url", engine.url, "--engine-kind", "sim", "--scheduler", "plas"]
        (sidecar,) = group.start_all([service("sidecar", tmp_path, sidecar_args)])
        (proxy,) = group.start_all([service("proxy", tmp_path, ["--backend", f"e0={sidecar.url}"])])
        wait_backends_healthy(proxy)
        options = LiveOptions(url=proxy.url, time_scale=SCALE, duration=60.0, program_id_suffix="~t", api=api)
        result = await run_programs(programs, options)
        assert result.errors == () and result.summary.programs_completed == 2
        for spec in programs:
            with urllib.request.urlopen(f"{proxy.url}/v1/programs/{spec.program_id}~t") as reply:
                state = json.loads(reply.read())
            assert state["calls_completed"] == spec.num_calls, state
            assert state["output_tokens"] == sum(c.output_tokens for c in spec.calls), state
