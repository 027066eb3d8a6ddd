"""The SSE report stripper: byte-identical output over any split of the stream (sse.py rules 1-4)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine_adapters.protocol import CompletionReport, decode_report
from autellix.proxy.sse import MARKER, ReportLine, ReportStripper

EVENTS = [
    b'data: {"choices":[{"delta":{"content":"a: b"}}]}\n\n',
    b": keep-alive comment\n\n",
    b'data: {"choices":[{"delta":{"content":"\\n:"}}]}\n\n',
    b":\n\n",
    b": autellix-repor is not the marker\n\n",
]
REPORT = CompletionReport("c1", queue_wait=0.25, exec_time=1.5, prompt_tokens=10, output_tokens=3)
DONE = b"data: [DONE]\n\n"


def run(chunks: list[bytes]) -> tuple[bytes, list[bytes], list[int]]:
    """Output bytes, report payloads, and how many bytes had been emitted when each report appeared."""
    stripper = ReportStripper()
    out = b""
    reports: list[bytes] = []
    positions: list[int] = []
    for chunk in chunks:
        for segment in [*stripper.feed(chunk)]:
            if isinstance(segment, ReportLine):
                reports.append(segment.payload)
                positions.append(len(out))
            else:
                out += segment
    for segment in stripper.close():
        if isinstance(segment, ReportLine):
            reports.append(segment.payload)
            positions.append(len(out))
        else:
            out += segment
    return out, reports, positions


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.sampled_from(EVENTS), max_size=6),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_split_gives_the_engines_bytes_and_the_report_before_done(events, crlf, cuts) -> None:
    body = b"".join(events)
    line = REPORT.sse_line()
    if crlf:
        line = line.replace(b"\n", b"\r\n")
    stream = body + line + DONE
    out, reports, positions = run(split(stream, cuts))
    assert out == body + DONE
    assert len(reports) == 1
    assert decode_report(reports[0]) == REPORT
    assert positions == [len(body)]  # the shell learns the report before [DONE] leaves


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.sampled_from(EVENTS), max_size=6), cuts=st.lists(st.integers(0, 10_000), max_size=12)
)
def test_a_stream_without_report_passes_unchanged(events, cuts) -> None:
    stream = b"".join(events) + DONE
    out, reports, _ = run(split(stream, cuts))
    assert (out, reports) == (stream, [])


def test_data_chunks_are_never_held_back() -> None:
    stripper = ReportStripper()
    assert stripper.feed(b'data: {"x": 1}\n') == [b'data: {"x": 1}\n']
    assert stripper.feed(b"\n") == [b"\n"]
    assert stripper.feed(b"data: par") == [b"data: par"]  # mid-line: nothing to decide
    assert stripper.feed(b"tial\n\n") == [b"tial\n\n"]


def test_only_a_possible_marker_prefix_is_held() -> None:
    stripper = ReportStripper()
    assert stripper.feed(b": auto") == [b": auto"]  # cannot be the marker: leaves at once
    assert stripper.feed(b"\n\n: aute") == [b"\n\n"]
    assert stripper.feed(b"rnal\n\n") == [b": auternal\n\n"]
    assert stripper.feed(MARKER[:5]) == []
    assert stripper.close() == [MARKER[:5]]


def test_a_report_cut_short_by_the_end_of_the_stream_is_still_returned() -> None:
    out, reports, _ = run([b"data: x\n\n", MARKER + b'{"call_id": "c"'])
    assert out == b"data: x\n\n"
    assert reports == [b'{"call_id": "c"']
    with pytest.raises(ValueError):
        decode_report(reports[0])


def test_the_marker_inside_a_data_line_is_not_a_report() -> None:
    stream = b"data: " + MARKER + json.dumps({"x": 1}).encode() + b"\n\n" + DONE
    out, reports, _ = run([stream])
    assert (out, reports) == (stream, [])
