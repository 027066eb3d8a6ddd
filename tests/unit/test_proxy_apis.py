"""The Responses and Messages APIs as the proxy reads them (apis/responses.py, apis/messages.py): bodies,
identity from the APIs' own fields, where each stream ends, and the ids of stored replies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.api_errors import ApiError
from autellix.proxy.apis import MESSAGES, RESPONSES, parse_call_body
from autellix.proxy.apis.responses import CreatedEventId, reply_id
from autellix.proxy.identity import extract_identity
from autellix.proxy.sse import StreamEnd

RESPONSE_STREAM = [
    b'event: response.created\ndata: {"response":{"id":"resp_1","status":"in_progress"},"sequence_number":0,'
    b'"type":"response.created"}\n\n',
    b'event: response.output_text.delta\ndata: {"delta":"event: response.completed\\n\\n","type":'
    b'"response.output_text.delta"}\n\n',
    b'event: response.completed\ndata: {"response":{"id":"resp_1","usage":{"input_tokens":3}},'
    b'"type":"response.completed"}\n\n',
]
MESSAGE_STREAM = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta",'
    b'"delta":{"text":"event: message_stop"}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_responses_body_gives_tokens_chain_and_whether_it_is_kept() -> None:
    parsed = parse_call_body(
        "responses",
        body(
            model="m",
            instructions="be brief",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "x" * 40}]}],
            previous_response_id="resp_1",
            stream=True,
        ),
    )
    assert (parsed.api, parsed.model, parsed.stream, parsed.chain, parsed.keeps_program) == (
        "responses", "m", True, "resp_1", True,
    )  # fmt: skip
    assert parsed.input_tokens == 12 + 2 * 4 and parsed.prefix == "be brief" + "x" * 40
    assert parse_call_body("responses", body(input="hi", store=False)).keeps_program is False
    named = parse_call_body("responses", body(input="hi", conversation={"id": "conv_7"}))
    assert named.program_hint == ("body:conversation", "conv_7")


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (body(model="m"), "input"),
        (body(input=5), "input"),
        (body(input=[1]), "input"),
        (body(input="x", conversation=3), "conversation"),
        (body(input="x", store="yes"), "store"),
        (body(input="x", max_output_tokens="5"), "max_output_tokens"),
    ],
)
def test_bad_responses_bodies_are_400s_naming_the_field(raw: bytes, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        RESPONSES.parse(raw)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_messages_body_names_its_program_by_user_id_and_errs_in_anthropics_shape() -> None:
    parsed = MESSAGES.parse(
        body(
            model="m",
            max_tokens=5,
            system="sys",
            metadata={"user_id": "u1"},
            messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        )
    )
    assert parsed.program_hint == ("body:metadata.user_id", "u1") and parsed.prefix == "syshello"
    identity = extract_identity({}, parsed.metadata, parsed.program_hint)
    assert (identity.program_id, identity.source) == ("u1", "body:metadata.user_id")
    header_first = extract_identity({"X-Claude-Code-Session-Id": "s"}, parsed.metadata, parsed.program_hint)
    assert header_first.program_id == "s"  # the session headers coding agents send come first
    for raw, param in [
        (body(model="m", messages=[{"role": "user", "content": "a"}]), "max_tokens"),
        (body(model="m", max_tokens=3), "messages"),
        (body(model="m", max_tokens=3, messages=[{"role": "user", "content": 3}]), "messages"),
        (body(model="m", max_tokens=3, messages=[{"role": "user", "content": "a"}], metadata={"user_id": 1}),
         "metadata.user_id"),
    ]:  # fmt: skip
        with pytest.raises(ApiError) as caught:
            MESSAGES.parse(raw)
        assert caught.value.param == param
        shaped = caught.value.body(MESSAGES.error_shape)
        assert shaped["type"] == "error" and shaped["error"]["type"] == "invalid_request_error"


def sent(api: object, chunks: list[bytes]) -> list[tuple[bool, bool]]:
    ending = StreamEnd(api.stream_end, api.stream_marker)  # type: ignore[attr-defined]
    seen = []
    for chunk in chunks:
        ending.sees(chunk)
        seen.append((ending.announced, ending.complete))
    return seen


@pytest.mark.parametrize(("api", "events"), [(RESPONSES, RESPONSE_STREAM), (MESSAGES, MESSAGE_STREAM)])
def test_named_event_streams_end_at_their_last_event_only(api: object, events: list[bytes]) -> None:
    assert sent(api, events) == [(False, False), (False, False), (True, True)]
    last = events[-1]
    cut = last.index(b"\ndata:")
    assert sent(api, [*events[:-1], last[:cut], last[cut:-1], last[-1:]])[-3:] == [
        (True, False), (True, False), (True, True),
    ]  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=600), max_size=8))
def test_the_created_events_id_is_found_however_the_stream_is_split(cuts: list[int]) -> None:
    stream = b"".join(RESPONSE_STREAM)
    points = sorted({min(c, len(stream)) for c in cuts} | {len(stream)})
    watcher, found, start = CreatedEventId(), [], 0
    for point in points:
        if point > start:
            found.append(watcher.feed(stream[start:point]))
            start = point
    assert [f for f in found if f is not None] == ["resp_1"]


def test_a_whole_replys_id_is_a_stored_responses_only() -> None:
    assert reply_id(body(object="response", id="resp_9")) == "resp_9"
    assert reply_id(body(error={"message": "x"})) is None and reply_id(b"{oops") is None
