"""The backend pool: health with hysteresis (backends.py rules 1-2), which backends a call may use
(rule 4) and the models the proxy lists. Health checks are answered by a scripted mock transport."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.backends import BackendPool, HealthState, HealthThresholds
from autellix.proxy.transport import MockReply, MockTransport, Transport, UpstreamRequest, UpstreamUnavailable


def pool_with(models: dict[str, list[str]]) -> BackendPool:
    pool = BackendPool([(name, f"http://{name}:1") for name in models], cast(Transport, None))
    for backend in pool.backends:
        backend.models = {
            model: {"id": model, "owned_by": backend.engine_id} for model in models[backend.engine_id]
        }
    return pool


def ids(backends) -> list[str]:
    return [backend.engine_id for backend in backends]


def test_a_model_goes_to_the_backends_that_list_it_in_fleet_order() -> None:
    pool = pool_with({"a": ["m", "n"], "b": ["n"], "c": ["m"]})
    assert ids(pool.serving("m")) == ["a", "c"]
    assert ids(pool.serving("n")) == ["a", "b"]
    assert ids(pool.serving(None)) == ["a", "b", "c"]


def test_an_unknown_model_is_none_once_any_list_is_known() -> None:
    assert pool_with({"a": ["m"], "b": []}).serving("x") is None
    assert ids(pool_with({"a": [], "b": []}).serving("x")) == ["a", "b"]  # nothing known yet: engines decide


def test_model_cards_are_the_union_with_the_first_backends_card() -> None:
    cards = pool_with({"a": ["n"], "b": ["m", "n"]}).model_cards()
    assert [(card["id"], card["owned_by"]) for card in cards] == [("m", "b"), ("n", "a")]


def health_after(outcomes: str, thresholds: HealthThresholds) -> str:
    """``outcomes``: ``+`` a passing check, ``-`` a failure; the health after each, as ``H``/``.``."""
    state = HealthState()
    seen = ""
    for outcome in outcomes:
        state = state.observe(outcome == "+", thresholds)
        seen += "H" if state.healthy else "."
    return seen


@pytest.mark.parametrize(
    ("outcomes", "thresholds", "expected"),
    [
        ("+", (3, 2), "H"),  # the first passing check admits at once
        ("--+", (3, 2), "..H"),  # ... also after failures, if the backend was never in the pool
        ("+--", (3, 2), "HHH"),  # two failures: still in the pool
        ("+---", (3, 2), "HHH."),  # the third consecutive failure takes it out
        ("+--+--", (3, 2), "HHHHHH"),  # a pass in between resets the streak
        ("+---+", (3, 2), "HHH.."),  # one pass is not enough to return ...
        ("+---++", (3, 2), "HHH..H"),  # ... two are
        ("+---+-++", (3, 2), "HHH....H"),  # a failure in between starts the count again
        ("+-+", (1, 1), "H.H"),  # thresholds of 1: every observation decides
        ("+-----+", (5, 1), "HHHHH.H"),
    ],
)
def test_hysteresis(outcomes: str, thresholds: tuple[int, int], expected: str) -> None:
    assert health_after(outcomes, HealthThresholds(*thresholds)) == expected


@pytest.mark.parametrize("thresholds", [(0, 1), (1, 0)])
def test_thresholds_are_at_least_one(thresholds: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        HealthThresholds(*thresholds)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.booleans(), max_size=40),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
)
def test_only_streaks_of_the_threshold_move_a_backend(outcomes: list[bool], fails: int, passes: int) -> None:
    thresholds = HealthThresholds(fails, passes)
    state = HealthState()
    for i, ok in enumerate(outcomes):
        after = state.observe(ok, thresholds)
        last_fails = i + 1 >= fails and not any(outcomes[i + 1 - fails : i + 1])
        last_passes = i + 1 >= passes and all(outcomes[i + 1 - passes : i + 1])
        if state.healthy and not after.healthy:
            assert last_fails  # out only after `fails` consecutive failures
        if after.healthy and not state.healthy:
            assert ok and (last_passes or not state.admitted)  # back only after `passes` consecutive passes
        if last_fails:
            assert not after.healthy
        if last_passes:
            assert after.healthy
        assert after.failures + after.successes >= 1 and min(after.failures, after.successes) == 0
        state = after


class ScriptedBackend:
    """Answers ``GET`` by path from a script of statuses or transport errors (the last one repeats)."""

    def __init__(self, script: dict[str, Sequence[int | Exception]]) -> None:
        self.script = {path: list(outcomes) for path, outcomes in script.items()}
        self.asked: list[str] = []

    async def __call__(self, request: UpstreamRequest) -> MockReply:
        path = "/" + request.url.split("/", 3)[3]
        self.asked.append(path)
        outcomes = self.script.get(path, [404])
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        body = json.dumps({"data": [{"id": "m"}]}).encode() if path == "/v1/models" else b"{}"
        return MockReply(outcome, body)


def fake_pool(
    script: dict[str, Sequence[int | Exception]], **options: Any
) -> tuple[BackendPool, ScriptedBackend]:
    backend = ScriptedBackend({"/v1/models": [200], **script})
    pool = BackendPool([("a", "http://a:1")], MockTransport(backend), **options)
    return pool, backend


async def run_checks(pool: BackendPool, count: int) -> str:
    seen = ""
    for _ in range(count):
        await pool.check(pool.backends[0])
        seen += "H" if pool.backends[0].healthy else "."
    return seen


async def test_a_late_check_keeps_the_backend_until_the_threshold(caplog: pytest.LogCaptureFixture) -> None:
    late = UpstreamUnavailable("timed out", "timeout", unreachable=False)
    pool, _ = fake_pool({"/ready": [200, late, 503, 200, late, late, late, 200, 200, 200]})
    changes: list[bool] = []
    pool._on_change = lambda backend: changes.append(backend.healthy)
    with caplog.at_level(logging.INFO, logger="autellix.proxy.backends"):
        assert await run_checks(pool, 10) == "HHHHHH..HH"
    assert changes == [seen == "H" for seen in "HHHHHH..HH"]  # the gauge follows every check
    assert pool.backends[0].last_error is None and pool.backends[0].models == {"m": {"id": "m"}}
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(" (")[1].split(")")[0] for m in messages if "failed (" in m] == [
        "1 of 3 before it leaves the pool",
        "2 of 3 before it leaves the pool",
        "1 of 3 before it leaves the pool",
        "2 of 3 before it leaves the pool",
    ]
    assert any("leaves the pool after 3 consecutive failures: no answer within" in m for m in messages)
    assert any("passed (1 of 2 before it returns)" in m for m in messages)


async def test_an_engine_without_ready_is_asked_health_and_thresholds_apply() -> None:
    pool, session = fake_pool({"/ready": [404], "/health": [200, 500, 500, 500, 200]}, failure_threshold=2)
    assert await run_checks(pool, 5) == "HH..."
    assert session.asked.count("/ready") == 1  # asked once, then /health only
    assert pool.backends[0].health == HealthState(False, 0, 1, True)  # one pass of the two it needs


@pytest.mark.parametrize(
    ("thresholds", "checks", "expected"),
    [((3, 2), [200], "HHH.."), ((1, 1), [200], "H...."), ((3, 2), [200, 500], "HHH..")],
)
async def test_calls_that_cannot_connect_count_with_the_checks(
    thresholds: tuple[int, int], checks: list[int], expected: str
) -> None:
    pool, _ = fake_pool({"/ready": checks}, failure_threshold=thresholds[0], success_threshold=thresholds[1])
    seen = await run_checks(pool, len(checks))
    for _ in range(len(expected) - len(checks)):
        pool.record_call_failure("a", "ClientConnectorError: refused")
        seen += "H" if pool.backends[0].healthy else "."
    assert seen == expected


def test_call_failures_of_unknown_or_never_admitted_backends_change_nothing() -> None:
    changes: list[str] = []
    pool = BackendPool(
        [("a", "http://a:1")],
        cast(Transport, None),
        on_change=lambda b: changes.append(b.engine_id),
    )
    pool.record_call_failure("a", "refused")  # never checked yet: nothing to take out
    pool.record_call_failure("missing", "refused")
    assert changes == [] and pool.backends[0].health == HealthState()
    pool.backends[0].health = HealthState(healthy=True, admitted=True)
    pool.record_call_failure("a", "refused")
    assert changes == ["a"] and pool.backends[0].health == HealthState(True, 1, 0, True)
    assert pool.any_healthy
