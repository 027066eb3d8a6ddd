"""The admission window's rules (autellix/engine_adapters/admission.py), on plain data and a virtual clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine_adapters.admission import AdmissionWindow, EngineLoad, WindowParams


def window(**overrides: object) -> AdmissionWindow:
    values: dict[str, object] = {"initial": 4, "minimum": 1, "maximum": 64, "overprovision": 2}
    values.update(overrides)
    return AdmissionWindow(WindowParams(**values))  # type: ignore[arg-type]


def load(running: int, waiting: int, kv: float | None = None) -> EngineLoad:
    return EngineLoad(running=running, waiting=waiting, kv_usage=kv)


def test_fixed_window_is_the_maximum_and_never_moves() -> None:
    w = window(adaptive=False, maximum=5)
    assert w.size == 5
    change = w.observe(load(0, 50), in_flight=5, backlog=10, now=1.0)
    assert (change.action, w.size) == ("hold", 5)
    assert w.room(3) == 2 and w.room(7) == 0


def test_slow_start_doubles_while_the_engine_runs_everything_we_send() -> None:
    w = window()
    sizes = []
    for step in range(5):
        w.observe(load(running=w.size, waiting=0), in_flight=w.size, backlog=100, now=float(step))
        sizes.append(w.size)
    assert sizes == [8, 16, 32, 64, 64]  # capped at the maximum


@pytest.mark.parametrize(
    ("engine", "in_flight", "backlog", "reason"),
    [
        (load(4, 0), 3, 10, "window not binding"),  # room left: nothing to learn
        (load(4, 0), 4, 0, "window not binding"),  # nobody waits in our queue
        (load(3, 0), 4, 10, "probe predates our admissions"),  # engine has not seen one of ours yet
        (load(4, 0, kv=0.97), 4, 10, "KV cache near full"),
        (load(2, 2), 4, 10, "steady: engine holds the slack"),  # the target itself
    ],
)
def test_no_growth_without_evidence_of_room(
    engine: EngineLoad, in_flight: int, backlog: int, reason: str
) -> None:
    w = window()
    change = w.observe(engine, in_flight=in_flight, backlog=backlog, now=0.0)
    assert (change.action, change.reason, w.size) == ("hold", reason, 4)


def test_congestion_needs_consecutive_probes_then_snaps_to_batch_plus_slack() -> None:
    w = window(initial=16, congestion_probes=2)
    first = w.observe(load(running=6, waiting=10), in_flight=16, backlog=5, now=0.0)
    assert first.action == "hold" and w.size == 16  # one probe may have caught a burst in transit
    second = w.observe(load(running=6, waiting=10), in_flight=16, backlog=5, now=0.1)
    assert (second.action, second.before, second.after) == ("shrink", 16, 8)
    assert w.room(16) == 0 and w.room(7) == 1
    assert not w.slow_start


def test_a_calm_probe_resets_the_congestion_count() -> None:
    w = window(initial=16, congestion_probes=2)
    w.observe(load(6, 10), in_flight=16, backlog=5, now=0.0)
    w.observe(load(6, 1), in_flight=7, backlog=5, now=0.1)
    w.observe(load(6, 10), in_flight=16, backlog=5, now=0.2)
    assert w.size == 16


def test_grows_while_the_engine_holds_less_than_the_slack() -> None:
    w = window(initial=4, overprovision=2)
    change = w.observe(load(running=3, waiting=1), in_flight=4, backlog=10, now=0.0)
    assert (change.action, w.size) == ("grow", 8)


def test_a_transient_low_running_count_does_not_shrink_the_window_too_far() -> None:
    # A group of calls just finished: replacements wait for the next step while R is momentarily low.
    w = window(initial=20, overprovision=2, congestion_probes=2)
    w.observe(load(running=2, waiting=14), in_flight=20, backlog=5, now=0.0)
    w.observe(load(running=16, waiting=4), in_flight=20, backlog=5, now=0.1)
    assert w.size == 18  # the run's largest batch + slack, not 2 + 2


def test_after_congestion_growth_is_additive() -> None:
    w = window(initial=16, congestion_probes=1)
    w.observe(load(6, 10), in_flight=16, backlog=5, now=0.0)
    assert w.size == 8
    w.observe(load(8, 0), in_flight=8, backlog=5, now=0.1)
    w.observe(load(9, 0), in_flight=9, backlog=5, now=0.2)
    assert w.size == 10


def test_foreign_congestion_does_not_shrink_the_window() -> None:
    w = window(initial=4, congestion_probes=1)
    change = w.observe(load(running=30, waiting=20), in_flight=4, backlog=3, now=0.0)
    assert change.action == "hold" and w.size == 4


def test_converges_on_a_modelled_engine_and_keeps_its_queue_within_the_slack() -> None:
    # An engine with a batch of 6: every call we send beyond 6 waits inside it.
    batch, slack = 6, 1
    w = window(initial=1, overprovision=slack, congestion_probes=1)
    waiting_seen = []
    for step in range(30):
        in_flight = w.size  # a deep backlog keeps the window full
        running = min(in_flight, batch)
        waiting_seen.append(in_flight - running)
        w.observe(load(running, in_flight - running), in_flight=in_flight, backlog=100, now=float(step))
    assert w.size == batch + slack
    assert max(waiting_seen[-20:]) <= slack


def test_shrink_never_goes_below_the_minimum() -> None:
    w = window(initial=8, minimum=3, congestion_probes=1)
    w.observe(load(running=0, waiting=9), in_flight=8, backlog=1, now=0.0)
    assert w.size == 3


def test_clock_must_not_go_backwards() -> None:
    w = window()
    w.observe(load(0, 0), 0, 0, now=2.0)
    with pytest.raises(ValueError, match="backwards"):
        w.observe(load(0, 0), 0, 0, now=1.0)


@pytest.mark.parametrize(
    "params",
    [
        {"minimum": 0},
        {"minimum": 5, "maximum": 4, "initial": 4},
        {"initial": 100, "maximum": 64},
        {"overprovision": -1},
        {"congestion_probes": 0},
        {"kv_high_watermark": 0.0},
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, int | float]) -> None:
    values: dict[str, int | float] = {"initial": 4, "minimum": 1, "maximum": 64}
    values.update(params)
    with pytest.raises(ValueError):
        WindowParams(**values)  # type: ignore[arg-type]


probes = st.lists(
    st.tuples(
        st.integers(0, 80),
        st.integers(0, 80),
        st.integers(0, 80),
        st.integers(0, 50),
        st.none() | st.floats(0, 1),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(probes, st.integers(1, 4), st.integers(0, 3))
def test_window_stays_within_bounds_and_moves_only_as_announced(
    observed: list[tuple[int, int, int, int, float | None]], minimum: int, slack: int
) -> None:
    w = window(initial=max(minimum, 4), minimum=minimum, maximum=32, overprovision=slack)
    for step, (running, waiting, in_flight, backlog, kv) in enumerate(observed):
        before = w.size
        change = w.observe(load(running, waiting, kv), in_flight, backlog, now=float(step))
        assert minimum <= w.size <= 32
        assert (change.before, change.after) == (before, w.size)
        assert change.action == ("grow" if w.size > before else "shrink" if w.size < before else "hold")
        if change.action == "grow":
            assert waiting < max(slack, 1) and running + waiting >= in_flight
            assert backlog > 0 and in_flight >= before
        if change.action == "shrink":
            assert waiting > slack and w.size >= max(minimum, running + slack)
        assert w.room(in_flight) == max(0, w.size - in_flight)
