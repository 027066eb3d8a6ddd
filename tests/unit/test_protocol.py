"""The proxy↔sidecar wire protocol: headers and completion reports round-trip and reject bad values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.engine_adapters import protocol
from autellix.engine_adapters.protocol import CallContext, CompletionReport, ProtocolError


def test_call_context_round_trips_through_headers() -> None:
    context = CallContext("prog-1", "call-9", "t2", 1.5, 1.25, 0.75, 1_700_000_000.5, 812)
    assert protocol.decode_call_context(context.headers(), "unused", now=0.0) == context


def test_missing_program_id_makes_a_program_of_one_call() -> None:
    context = protocol.decode_call_context({}, "abc", now=12.0)
    assert context.program_id == "call-abc"
    assert context.call_id == "abc"
    assert context.arrival == 12.0
    assert context.thread_id is None


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (protocol.PROGRAM_SERVICE, "fast"),
        (protocol.PROGRAM_SERVICE, "-1"),
        (protocol.PROGRAM_WAIT, "nan"),
        (protocol.ARRIVAL, "inf"),
        (protocol.INPUT_TOKENS, "many"),
        (protocol.PROGRAM_ID, "x" * (protocol.MAX_WIRE_ID_LENGTH + 1)),
        (protocol.PROGRAM_ID, "bad\x01id"),
    ],
)
def test_bad_header_values_are_rejected(header: str, value: str) -> None:
    with pytest.raises(ProtocolError, match=header):
        protocol.decode_call_context({header: value}, "c", now=0.0)


@given(
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=1e6),
    st.integers(min_value=0, max_value=10**6),
    st.booleans(),
)
def test_report_round_trips(wait: float, exec_time: float, tokens: int, ok: bool) -> None:
    report = CompletionReport("c1", wait, exec_time, tokens, tokens // 2, tokens + 1, ok)
    assert protocol.decode_report(report.to_json()) == report
    line = report.sse_line()
    assert line.startswith(protocol.REPORT_SSE_PREFIX) and line.endswith(b"\n\n")
    assert protocol.decode_report(line[len(protocol.REPORT_SSE_PREFIX) :].strip()) == report


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"call_id": "c"}',
        '{"call_id": "c", "queue_wait": -1, "exec_time": 1}',
        '{"call_id": "c", "queue_wait": "x", "exec_time": 1}',
        '{"call_id": "c", "queue_wait": 0, "exec_time": 1, "resident": -0.5}',
        '{"call_id": "c", "queue_wait": 0, "exec_time": 1, "resident": "lots"}',
        '{"call_id": "c", "queue_wait": 0, "exec_time": 1, "resident": NaN}',
    ],
)
def test_bad_reports_are_rejected(raw: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_report(raw)


def test_a_reports_resident_share_travels_only_when_the_sidecar_has_one() -> None:
    plain = CompletionReport("c1", 0.0, 1.0)
    assert "resident" not in plain.to_json() and protocol.decode_report(plain.to_json()).resident is None
    gated = CompletionReport("c1", 0.0, 1.0, resident=1.25)  # may pass 1: residents overcommit
    assert protocol.decode_report(gated.to_json()) == gated


def test_internal_headers_are_stripped_case_insensitively() -> None:
    headers = {"X-Autellix-Report": "{}", "x-autellix-program-id": "p", "Content-Type": "application/json"}
    assert protocol.strip_internal_headers(headers) == {"Content-Type": "application/json"}
