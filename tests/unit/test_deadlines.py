"""autellix/deadlines.py and proxy/limits.py: the deadline header, 429s, the per-tenant count."""

from __future__ import annotations

import pytest

from autellix.api_errors import ApiError, error_body
from autellix.auth import key_id
from autellix.deadlines import DeadlineError, call_timeout, deadline_exceeded, header_value, retry_after
from autellix.proxy.limits import CallLimits, LimitSettings


@pytest.mark.parametrize(
    ("headers", "cap", "expected"),
    [
        ({}, 3600.0, 3600.0),
        ({}, 0.0, None),
        ({"X-Request-Timeout": "2.5"}, 3600.0, 2.5),
        ({"X-Request-Timeout": " 7 "}, 0.0, 7.0),
        ({"X-Request-Timeout": "9000"}, 60.0, 60.0),
        ({"X-Request-Timeout": "1e-3"}, 10.0, 0.001),
    ],
)
def test_the_deadline_is_the_header_capped_or_the_default(
    headers: dict[str, str], cap: float, expected: float | None
) -> None:
    assert call_timeout(headers, cap) == expected


@pytest.mark.parametrize("value", ["", "x", "0", "-1", "nan", "inf", "-inf", "1" * 40, "1,5"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(DeadlineError, match="X-Request-Timeout"):
        call_timeout({"X-Request-Timeout": value}, 3600.0)


def test_what_is_left_goes_on_and_retry_after_is_whole_seconds() -> None:
    assert header_value(1.23456) == "1.235"
    assert header_value(-3.0) == "0.001"
    assert [retry_after(s) for s in (0.0, 0.2, 1.0, 1.01, 30.0)] == ["1", "1", "1", "2", "30"]


def test_deadline_exceeded_is_a_504_that_names_the_time() -> None:
    error = deadline_exceeded(2.5, "in the queue")
    assert error.status == 504 and error.code == "deadline_exceeded"
    assert "2.5 s" in error.message and "in the queue" in error.message


def test_a_429_is_openais_rate_limit_and_anthropics_rate_limit_error() -> None:
    openai = error_body(429, "slow down", code="rate_limit_exceeded")
    assert openai["error"]["type"] == "requests" and openai["error"]["code"] == "rate_limit_exceeded"
    assert error_body(429, "slow down", shape="anthropic")["error"]["type"] == "rate_limit_error"


def test_a_tenant_past_its_bound_gets_a_429_and_others_do_not() -> None:
    limits = CallLimits(LimitSettings(max_queued_per_key=2, retry_after=2.5))
    limits.enter("a")
    limits.enter("a")
    with pytest.raises(ApiError) as caught:
        limits.enter("a")
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "3"}
    assert limits.tenant_calls("a") == 2  # the refused call was never counted
    limits.enter("b")
    limits.leave("a")
    limits.enter("a")
    for _ in range(2):
        limits.leave("a")
    limits.leave("b")
    assert limits.tenant_calls("a") == limits.tenant_calls("b") == 0


def test_zero_means_unbounded() -> None:
    limits = CallLimits(LimitSettings(max_queued_per_key=0, max_queued_per_engine=0))
    for _ in range(10_000):
        limits.enter("a")
    assert not limits.engine_full(10**9)


def test_an_engine_is_full_at_its_bound() -> None:
    limits = CallLimits(LimitSettings(max_queued_per_engine=3))
    assert [limits.engine_full(n) for n in (0, 2, 3, 4)] == [False, False, True, True]
    assert limits.engines_full().status == 429


def test_a_tenant_is_a_digest_never_the_key() -> None:
    assert key_id("sk-secret") == key_id("sk-secret") != key_id("sk-other")
    assert "secret" not in key_id("sk-secret") and len(key_id("sk-secret")) == 16
