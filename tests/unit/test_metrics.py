"""Program-level metrics on hand-made records."""

from __future__ import annotations

import pytest

from autellix.records import (
    CallRecord,
    Distribution,
    EngineRecord,
    ProgramRecord,
    percentile,
    summarize,
)


def call(
    pid: str, n: int, arrival: float, admitted: float, first: float, done: float, **kw: int
) -> CallRecord:
    return CallRecord(
        pid, f"{pid}/{n}", "e0", arrival, admitted, first, done, done - admitted, admitted - arrival,
        kw.get("prompt", 100), kw.get("cached", 0), kw.get("out", 10), kw.get("pre", 0),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, 0.0), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([0.0, 10.0], 95, 9.5)],
)
def test_percentile_interpolates(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution_of_values() -> None:
    d = Distribution.of([4.0, 1.0, 3.0, 2.0])
    assert (d.count, d.mean, d.p50, d.max) == (4, 2.5, 2.5, 4.0)


def test_summary_by_hand() -> None:
    programs = [
        ProgramRecord("A", "w", "chain", 0.0, 2, completion=10.0, output_tokens=20, calls_completed=2),
        ProgramRecord("B", "w", "dag", 2.0, 1, completion=4.0, output_tokens=10, calls_completed=1),
        ProgramRecord("C", "w", "chain", 5.0, 1),  # never finished
    ]
    calls = [
        call("A", 0, 0.0, 1.0, 2.0, 4.0, prompt=100, cached=0, out=10),
        call("A", 1, 4.0, 4.0, 6.0, 10.0, prompt=200, cached=150, out=10, pre=1),
        call("B", 0, 2.0, 3.0, 3.5, 4.0, prompt=100, cached=50, out=10),
    ]
    engines = [EngineRecord("e0", busy_time=5.0, preemptions=3)]
    s = summarize(programs, calls, engines)
    assert (s.programs, s.programs_completed, s.programs_incomplete, s.calls_completed) == (3, 2, 1, 3)
    # token latency: A 10/20 = 0.5, B 2/10 = 0.2
    assert s.token_latency.mean == pytest.approx(0.35)
    assert s.token_latency.max == pytest.approx(0.5)
    assert s.response_time.mean == pytest.approx(6.0)
    assert s.call_queue_wait.mean == pytest.approx((1 + 0 + 1) / 3)
    assert s.call_ttft.mean == pytest.approx((2 + 2 + 1.5) / 3)
    assert s.call_e2e.mean == pytest.approx((4 + 6 + 2) / 3)
    assert s.prefix_cache_hit_rate == pytest.approx(200 / 400)
    assert s.makespan == pytest.approx(10.0)
    assert s.program_throughput == pytest.approx(0.2)
    assert s.token_throughput == pytest.approx(3.0)
    assert s.preemptions == 3 and s.engine_utilisation == pytest.approx(0.5)
    assert s.to_dict()["token_latency"]["mean"] == pytest.approx(0.35)  # type: ignore[index]


def test_summary_without_engine_records_counts_call_preemptions() -> None:
    programs = [ProgramRecord("A", "w", "chain", 0.0, 1, completion=2.0, output_tokens=4, calls_completed=1)]
    s = summarize(programs, [call("A", 0, 0.0, 0.0, 1.0, 2.0, pre=2)], duration=4.0)
    assert s.preemptions == 2 and s.engine_utilisation is None
    assert s.makespan == 4.0 and s.program_throughput == pytest.approx(0.25)


def test_empty_run() -> None:
    s = summarize([], [])
    assert s.programs == 0 and s.token_latency.mean == 0.0 and s.program_throughput == 0.0
