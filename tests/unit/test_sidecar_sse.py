"""The SSE relay (sse.py): byte-exact forwarding, [DONE] held for the report, usage chunk stripping,
identical output however the engine's bytes are split."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine_adapters.accounting import Usage
from autellix.engine_adapters.apis import MESSAGES, RESPONSES
from autellix.engine_adapters.protocol import REPORT_SSE_PREFIX, CompletionReport, decode_report
from autellix.engine_adapters.sse import SseRelay
from autellix.engine_adapters.vllm import VllmAdapter

REPORT = CompletionReport("c1", queue_wait=0.5, exec_time=1.25, output_tokens=2).sse_line()


def event(payload: dict[str, object] | str, newline: bytes = b"\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return b"data: " + data.encode() + newline + newline


def content(text: str) -> bytes:
    return event({"id": "x", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


USAGE_ONLY = event(
    {
        "id": "x",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}},
    }
)
STREAM = content("Hel") + content("lo") + USAGE_ONLY + event("[DONE]")


def relay_all(chunks: list[bytes], wants_usage: bool) -> tuple[bytes, SseRelay]:
    relay = SseRelay(wants_usage, VllmAdapter().read_usage)
    out = b"".join(relay.feed(chunk) for chunk in chunks)
    return out + relay.finish(REPORT), relay


def test_usage_chunk_is_stripped_when_the_client_did_not_ask_and_report_precedes_done() -> None:
    out, relay = relay_all([STREAM], wants_usage=False)
    assert out == content("Hel") + content("lo") + REPORT + event("[DONE]")
    assert relay.usage is not None and (relay.usage.prompt_tokens, relay.usage.cached_tokens) == (9, 4)
    assert relay.content_events == 2 and not relay.error_seen


def test_usage_chunk_is_kept_when_the_client_asked_for_it() -> None:
    out, relay = relay_all([STREAM], wants_usage=True)
    assert out == content("Hel") + content("lo") + USAGE_ONLY + REPORT + event("[DONE]")
    assert relay.usage is not None and relay.usage.output_tokens == 2


def test_complete_events_are_forwarded_at_once_and_done_is_held() -> None:
    relay = SseRelay(False, VllmAdapter().read_usage)
    assert relay.feed(content("a")) == content("a")
    assert relay.feed(content("b")[:7]) == b""  # half an event waits for its end
    assert relay.feed(content("b")[7:] + event("[DONE]")) == content("b")
    assert relay.done
    assert relay.finish(REPORT) == REPORT + event("[DONE]")


def test_usage_on_content_chunks_is_recorded_but_never_stripped() -> None:
    chunk = event({"choices": [{"index": 0, "delta": {"content": "z"}}], "usage": {"completion_tokens": 1}})
    out, relay = relay_all([chunk, event("[DONE]")], wants_usage=False)
    assert out == chunk + REPORT + event("[DONE]")
    assert relay.usage is not None and relay.usage.output_tokens == 1


def test_stream_without_done_gets_its_tail_closed_and_the_report_appended() -> None:
    out, relay = relay_all([content("a"), b'data: {"trunc'], wants_usage=False)
    assert out == content("a") + b'data: {"trunc\n\n' + REPORT
    assert not relay.done


def test_error_event_marks_the_call_failed_and_is_forwarded() -> None:
    error = event({"error": {"message": "boom", "type": "InternalServerError", "code": 500}})
    out, relay = relay_all([content("a"), error, event("[DONE]")], wants_usage=False)
    assert relay.error_seen
    assert out == content("a") + error + REPORT + event("[DONE]")


def test_comments_and_crlf_events_pass_unchanged() -> None:
    ping = b": ping\r\n\r\n"
    crlf = event({"choices": [{"text": "q"}]}, newline=b"\r\n")
    out, relay = relay_all([ping, crlf, event("[DONE]", newline=b"\r\n")], wants_usage=False)
    assert out == ping + crlf + REPORT + event("[DONE]", newline=b"\r\n")
    assert relay.content_events == 1


def test_the_report_line_is_a_comment_the_proxy_can_decode() -> None:
    out, _ = relay_all([STREAM], wants_usage=False)
    lines = [line for line in out.split(b"\n") if line.startswith(REPORT_SSE_PREFIX)]
    assert len(lines) == 1
    assert decode_report(lines[0][len(REPORT_SSE_PREFIX) :]).exec_time == 1.25


@pytest.mark.parametrize("wants_usage", [False, True])
@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_stream_gives_the_same_bytes(wants_usage: bool, cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    whole, _ = relay_all([STREAM], wants_usage)
    split, relay = relay_all(chunks, wants_usage)
    assert split == whole
    assert relay.done and relay.usage is not None


RESPONSES_EVENTS = [
    b'event: response.created\ndata: {"response":{"id":"r","usage":null},"type":"response.created"}\n\n',
    b'event: response.output_text.delta\ndata: {"delta":"a","type":"response.output_text.delta"}\n\n',
    b'event: response.output_text.delta\ndata: {"delta":"b","type":"response.output_text.delta"}\n\n',
    b'event: response.completed\ndata: {"response":{"id":"r","usage":{"input_tokens":9,"output_tokens":2,'
    b'"input_tokens_details":{"cached_tokens":4}},"metrics":{"queue_time_ms":250}},'
    b'"type":"response.completed"}\n\n',
]
MESSAGES_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,'
    b'"output_tokens":0}}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"a"}}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"input_tokens":5,"output_tokens":3,'
    b'"cache_read_input_tokens":4,"cache_creation_input_tokens":0}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


@pytest.mark.parametrize(
    ("rules", "events", "usage"),
    [
        (RESPONSES, RESPONSES_EVENTS, Usage(9, 4, 2, engine_queue_time=0.25)),
        (MESSAGES, MESSAGES_EVENTS, Usage(9, 4, 3)),  # Anthropic's input_tokens leaves the cached out
    ],
)
def test_named_event_streams_hold_their_last_event_behind_the_report(rules, events, usage) -> None:
    relay = SseRelay(False, VllmAdapter().read_usage, rules.dialect)
    sent = b"".join(relay.feed(chunk) for chunk in [b"".join(events)[i : i + 7] for i in range(0, 2000, 7)])
    assert relay.done and sent == b"".join(events[:-1])  # nothing dropped, the last event held
    assert relay.finish(b": report\n\n") == b": report\n\n" + events[-1]
    assert relay.usage == usage and not relay.error_seen
    assert relay.content_events == (2 if rules is RESPONSES else 1)


def test_an_error_event_fails_a_named_event_stream() -> None:
    relay = SseRelay(False, VllmAdapter().read_usage, MESSAGES.dialect)
    error = b'event: error\ndata: {"type":"error","error":{"type":"x","message":"m"}}\n\n'
    relay.feed(MESSAGES_EVENTS[0] + error)
    assert relay.error_seen and relay.done
