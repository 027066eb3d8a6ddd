"""Sweeps, the throughput-at-equal-latency figure, and the simulate/bench commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autellix.cli import main
from autellix.loadgen.report import format_table, throughput_at_latency
from autellix.loadgen.sweep import programs_for_rate


def fake_row(system: str, rate: float, mean: float, incomplete: int = 0) -> dict[str, object]:
    lat = {"mean": mean, "p95": mean, "p99": mean}
    summary = {
        "token_latency": lat, "programs_completed": 10 - incomplete, "programs_incomplete": incomplete,
        "programs": 10, "call_queue_wait": {"p95": 0.0}, "prefix_cache_hit_rate": 0.5, "preemptions": 0,
    }  # fmt: skip
    return {"workload": "w", "system": system, "rate": rate, "summary": summary}


def test_throughput_at_equal_latency() -> None:
    rows = [
        fake_row("vllm", 1.0, 0.02), fake_row("vllm", 2.0, 0.05), fake_row("vllm", 3.0, 0.5),
        fake_row("autellix", 1.0, 0.01), fake_row("autellix", 2.0, 0.015),
        fake_row("autellix", 3.0, 0.019, 1),
    ]  # fmt: skip
    fig = throughput_at_latency(rows, "mean", 2.0)["w"]
    assert fig["bound"] == pytest.approx(0.02)
    assert fig["throughput"] == {"vllm": 1.0, "autellix": 2.0}  # autellix at 3.0 left programs unfinished
    assert fig["ratios"] == {"vllm": 2.0}
    assert "autellix" in format_table(rows)


def test_throughput_is_read_off_the_curve_where_it_crosses_the_bound() -> None:
    rows = [
        fake_row("vllm", 1.0, 0.01), fake_row("vllm", 2.0, 0.04),
        fake_row("autellix", 1.0, 0.01), fake_row("autellix", 2.0, 0.015),
    ]  # fmt: skip
    fig = throughput_at_latency(rows, "mean", 2.0)["w"]
    # log-linear: 0.02 lies halfway between 0.01 and 0.04 in log space.
    assert fig["throughput"]["vllm"] == pytest.approx(1.5)
    assert fig["throughput"]["autellix"] == 2.0 and fig["lower_bound"] == ["autellix"]
    assert fig["ratios"] == {"vllm": pytest.approx(2.0 / 1.5, rel=1e-3)}


def test_a_straggler_the_horizon_cut_off_is_not_overload() -> None:
    def run(system: str, rate: float, mean: float, incomplete: int) -> dict[str, object]:
        row = fake_row(system, rate, mean)
        summary = row["summary"]
        assert isinstance(summary, dict)
        summary.update(programs=100, programs_completed=100 - incomplete, programs_incomplete=incomplete)
        return row

    rows = [
        run("a", 1.0, 0.01, 0), run("a", 2.0, 0.015, 1),  # 1 of 100: a long program the drain cut off
        run("a", 3.0, 0.019, 20),  # a fifth: the system did not keep up
    ]  # fmt: skip
    assert throughput_at_latency(rows, "mean", 2.0)["w"]["throughput"] == {"a": 2.0}


def test_programs_for_rate_keeps_arrivals_within_duration() -> None:
    from autellix.loadgen.arrivals import make_workload

    pool = make_workload("bfcl", 60, 1.0, 0)
    programs = programs_for_rate(pool, 2.0, 0, 10.0)
    assert programs and all(p.arrival_time <= 10.0 for p in programs)
    assert [p.program_id for p in programs] == [p.program_id for p in pool[: len(programs)]]


def test_simulate_command_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    code = main(
        ["simulate", "--workload", "bfcl", "--num-programs", "4", "--rate", "1", "--system", "vllm-opt",
         "--system", "autellix", "--profile", "h100-llama3-8b", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert [r["system"] for r in document["runs"]] == ["vllm-opt", "autellix"]
    assert all(r["summary"]["programs_completed"] == 4 for r in document["runs"])
    assert "autellix" in capsys.readouterr().out


def test_bench_command_writes_report(tmp_path: Path) -> None:
    code = main(
        ["bench", "--workload", "bfcl", "--rate", "0.5", "--rate", "1", "--duration", "8", "--system",
         "vllm-opt", "--system", "autellix", "--profile", "h100-llama3-8b", "--no-progress",
         "--out-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"bench.json", "bench.md", "latency_bfcl.png"}
    runs = json.loads((tmp_path / "bench.json").read_text())["runs"]
    assert len(runs) == 4


def test_unknown_system_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--system", "nope", "--num-programs", "1"]) == 2
    assert "unknown system" in capsys.readouterr().err


def test_a_ratio_the_grid_leaves_open_says_which_way() -> None:
    from autellix.loadgen.report import _ratio_cell

    def entry(ours: tuple[float, bool], theirs: tuple[float, bool]) -> dict[str, Any]:
        return {
            "throughput": {"a": ours[0], "b": theirs[0]},
            "bracketed": {"a": ours[1], "b": theirs[1]},
            "ratios": {"b": round(ours[0] / theirs[0], 3)},
        }

    assert _ratio_cell(entry((2.0, True), (1.0, True)), "a", "b") == "2.00x"
    assert _ratio_cell(entry((3.0, False), (1.5, True)), "a", "b") == ">=2.00x"  # a beyond the top
    assert _ratio_cell(entry((1.5, True), (3.0, False)), "a", "b") == "<=0.50x"  # b beyond the top
    assert _ratio_cell(entry((3.0, False), (3.0, False)), "a", "b") == "-"  # both: nothing known


def test_bench_jobs_give_the_sequential_rows(tmp_path: Path) -> None:
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        args = ["bench", "--workload", "bfcl", "--workload", "sharegpt", "--rate", "0.5", "--duration", "6",
                "--system", "vllm-opt", "--system", "autellix", "--no-progress", "--jobs", jobs,
                "--out-dir", str(out)]  # fmt: skip
        assert main(args) == 0
        outputs.append(json.loads((out / "bench.json").read_text())["runs"])
    assert outputs[0] == outputs[1]
    assert [r["workload"] for r in outputs[0]] == ["bfcl", "bfcl", "sharegpt", "sharegpt"]
