"""Report computation (accounting.py): exec_time and queue_wait as the module docstring defines them."""

from __future__ import annotations

import pytest

from autellix.engine_adapters.accounting import Usage, compute_report, estimate_input_tokens
from autellix.engine_adapters.protocol import CompletionReport, decode_report


def report(**overrides: object) -> CompletionReport:
    values: dict[str, object] = {
        "our_queue_wait": 1.5,
        "admitted_at": 100.0,
        "completed_at": 103.0,
        "usage": Usage(prompt_tokens=120, cached_tokens=64, output_tokens=30),
        "ok": True,
    }
    values.update(overrides)
    return compute_report("call-1", **values)  # type: ignore[arg-type]


def test_without_engine_queue_time_exec_is_admission_to_completion() -> None:
    r = report()
    assert (r.queue_wait, r.exec_time) == (1.5, 3.0)
    assert (r.prompt_tokens, r.cached_tokens, r.output_tokens, r.ok) == (120, 64, 30, True)
    assert decode_report(r.to_json()) == r


def test_engine_queue_time_moves_from_exec_to_wait() -> None:
    r = report(usage=Usage(10, 0, 5, engine_queue_time=0.5))
    assert r.queue_wait == pytest.approx(2.0)
    assert r.exec_time == pytest.approx(2.5)
    assert r.queue_wait + r.exec_time == pytest.approx(1.5 + 3.0)  # nothing lost, nothing invented


@pytest.mark.parametrize(
    ("engine_queue", "wait", "exec_time"),
    [(10.0, 4.5, 0.0), (-1.0, 1.5, 3.0), (float("nan"), 1.5, 3.0)],
)
def test_engine_queue_time_is_clipped(engine_queue: float, wait: float, exec_time: float) -> None:
    r = report(usage=Usage(engine_queue_time=engine_queue))
    assert r.queue_wait == pytest.approx(wait)
    assert r.exec_time == pytest.approx(exec_time)


def test_times_never_negative() -> None:
    r = report(our_queue_wait=-0.1, completed_at=99.0)
    assert r.queue_wait == 0.0 and r.exec_time == 0.0


def test_aborted_call_still_reports_the_engine_time_it_used() -> None:
    r = report(usage=None, ok=False, fallback_output_tokens=12)
    assert (r.ok, r.exec_time, r.output_tokens, r.prompt_tokens) == (False, 3.0, 12, 0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "x" * 40}]}, 10),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 9}]}]}, 3),
        ({"prompt": "abcd" * 5}, 5),
        ({"prompt": [1, 2, 3, 4, 5, 6]}, 6),
        ({"prompt": [[1, 2], [3]]}, 3),
        ({}, 1),
        ({"messages": "nonsense", "prompt": 7}, 1),
        # Messages: the system prompt (a string or text blocks) counts beside the messages
        ({"system": "s" * 8, "messages": [{"role": "user", "content": "u" * 8}]}, 4),
        ({"system": [{"type": "text", "text": "s" * 12}], "messages": []}, 3),
        # Responses: input as a string or as items (messages, function call outputs), instructions
        ({"input": "i" * 20, "instructions": "n" * 4}, 6),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "a" * 8}]},
                    {"type": "function_call_output", "call_id": "c", "output": "b" * 8},
                    {"role": "assistant", "content": "c" * 4},
                ]
            },
            5,
        ),
        ({"input": 3, "instructions": ["x"]}, 1),
    ],
)
def test_input_token_estimate(body: dict[str, object], expected: int) -> None:
    assert estimate_input_tokens(body) == expected
