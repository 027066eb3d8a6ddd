"""Abort-and-resume's pure half (resume.py): which calls may be stopped, what the client sees of a
stream asked with ``return_token_ids``, the resumed request, and the resumed chunks translated back.

The engine's chunks are built with the simulated engine's own chunk builder (vLLM 0.32's shapes, held
to real vLLM by tests/real_vllm/test_parity.py), so "what the client would have seen without the
flag" is the same builder with the flag off."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autellix.engine_adapters.resume import ResumeSession, why_not_resumable
from autellix.engine_adapters.sse import SseRelay
from autellix.engine_adapters.vllm import VllmAdapter
from autellix.simulator.openai_api import StreamHeader, sse

CHAT_BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 10,
    "min_tokens": 4,
    "temperature": 0.7,
    "ignore_eos": True,
    "stream": True,
}
COMPLETION_BODY: dict[str, Any] = {"model": "m", "prompt": "once upon", "max_tokens": 10, "stream": True}
PROMPT = [11, 12, 13]


@pytest.mark.parametrize(
    ("api", "changes"),
    [
        ("chat", {}),
        ("chat", {"stream_options": {"include_usage": True}, "n": 1, "logprobs": False, "tools": []}),
        ("chat", {"response_format": {"type": "text"}, "stop": [], "seed": None, "priority": 3}),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        ("chat", {"max_tokens": None, "max_completion_tokens": 5, "chat_template_kwargs": {"x": 1}}),
        ("completion", {"prompt": "once upon"}),
        ("completion", {"prompt": [1, 2, 3], "top_k": 5, "cache_salt": "s", "presence_penalty": 0.0}),
    ],
)
def test_calls_a_resumed_request_reproduces_are_resumable(api: str, changes: dict[str, Any]) -> None:
    body = {**(CHAT_BODY if api == "chat" else COMPLETION_BODY), **changes}
    assert why_not_resumable(api, body) is None


@pytest.mark.parametrize(
    ("api", "changes", "why"),
    [
        ("responses", {}, "responses calls are not resumed"),
        ("chat", {"stream": False}, "not streamed"),
        ("chat", {"max_tokens": None}, "no max_tokens"),
        ("chat", {"n": 2}, "n set"),
        ("chat", {"n": True}, "n set"),  # True is not 1
        ("chat", {"logprobs": True}, "logprobs set"),
        ("chat", {"tools": [{"type": "function"}]}, "tools set"),
        ("chat", {"response_format": {"type": "json_object"}}, "response_format set"),
        ("chat", {"stop": ["\n"]}, "stop set"),
        ("chat", {"seed": 7}, "seed set"),
        ("chat", {"frequency_penalty": 0.5}, "frequency_penalty set"),
        ("chat", {"return_token_ids": True}, "return_token_ids set"),
        ("chat", {"mystery": 1}, "unknown field 'mystery'"),
        ("chat", {"stream_options": {"continuous_usage_stats": True}}, "stream_options beyond include_usage"),
        (
            "chat",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages with more than text",
        ),
        ("completion", {"echo": True}, "echo set"),
        ("completion", {"best_of": 3}, "best_of set"),
        ("completion", {"prompt": ["a", "b"]}, "not one prompt"),
        ("completion", {"prompt": [[1, 2]]}, "not one prompt"),
    ],
)
def test_calls_a_resumed_request_would_not_reproduce_are_not(
    api: str, changes: dict[str, Any], why: str
) -> None:
    body = {**(CHAT_BODY if api == "chat" else COMPLETION_BODY), **changes}
    assert why_not_resumable(api, body) == why


def chat_first_spell(with_ids: bool, header: StreamHeader) -> list[bytes]:
    """The first three tokens of a chat stream (role chunk, then one token a chunk)."""
    return [
        sse(header.role_chunk(PROMPT if with_ids else None)),
        sse(header.delta_chunk(" a", [101] if with_ids else None, None)),
        sse(header.delta_chunk(" b", [102] if with_ids else None, None)),
        sse(header.delta_chunk(" c", [103] if with_ids else None, None)),
    ]


def rewrite_all(session: ResumeSession, events: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        rewritten = session.rewrite(event)
        if rewritten is not None:
            out.append(json.loads(rewritten[len(b"data: ") :]))
    return out


def decoded(events: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(event[len(b"data: ") :]) for event in events]


def test_the_client_sees_the_stream_it_would_see_without_token_ids_and_the_ids_are_recorded() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    assert session.first_body() == {**CHAT_BODY, "return_token_ids": True}
    header = StreamHeader("chat", "r1", 1700, "m")
    seen = rewrite_all(session, chat_first_spell(True, header))
    assert seen == decoded(chat_first_spell(False, header))
    assert (session.prompt_ids, session.generated) == (PROMPT, [101, 102, 103])
    assert session.identity == {"id": "chatcmpl-r1", "created": 1700, "model": "m"}
    assert session.can_resume


def test_the_resumed_request_asks_for_the_rest_from_prompt_and_generated_ids() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", {**CHAT_BODY, "cache_salt": "s", "priority": 4})
    rewrite_all(session, chat_first_spell(True, StreamHeader("chat", "r1", 1700, "m")))
    path, body = session.resume_request()
    assert path == "/v1/completions"
    assert body == {
        "model": "m",
        "temperature": 0.7,
        "ignore_eos": True,
        "cache_salt": "s",
        "prompt": [*PROMPT, 101, 102, 103],
        "max_tokens": 7,
        "min_tokens": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


def test_resumed_completion_chunks_become_the_first_spells_chat_chunks_with_the_calls_usage() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    first = StreamHeader("chat", "r1", 1700, "m")
    rewrite_all(session, chat_first_spell(True, first))
    session.resumed()
    resumed = StreamHeader("completion", "r2", 1799, "m")
    extended = [*PROMPT, 101, 102, 103]
    engine = [
        sse(resumed.delta_chunk(" d", [104], None, extended)),
        sse(resumed.delta_chunk(" e", [105], "length")),
        sse(resumed.usage_chunk(len(extended), 2, 6)),
        sse("[DONE]"),
    ]
    out = [session.rewrite(event) for event in engine]
    assert out[-1] == sse("[DONE]")
    chunks = [json.loads(event[len(b"data: ") :]) for event in out[:-1] if event is not None]
    # what an uninterrupted chat stream would have sent for these tokens (bar the usage details' keys)
    want = [first.delta_chunk(" d", None, None), first.delta_chunk(" e", None, "length")]
    assert chunks[:2] == want
    usage = chunks[2]
    assert {k: usage[k] for k in ("id", "object", "created", "model", "choices")} == {
        "id": "chatcmpl-r1",
        "object": "chat.completion.chunk",
        "created": 1700,
        "model": "m",
        "choices": [],
    }
    assert usage["usage"]["prompt_tokens"] == 3
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == 8
    assert usage["usage"]["prompt_tokens_details"]["cached_tokens"] == 3  # the hits within the prompt
    assert session.generated == [101, 102, 103, 104, 105] and session.finished


def test_a_completion_call_resumes_as_a_completion_with_its_own_identity() -> None:
    session = ResumeSession("completion", "/v1/completions", COMPLETION_BODY)
    first = StreamHeader("completion", "r1", 1700, "m")
    engine = [sse(first.delta_chunk(" a", [101], None, PROMPT)), sse(first.delta_chunk(" b", [102], None))]
    seen = rewrite_all(session, engine)
    assert seen == [first.delta_chunk(" a", None, None), first.delta_chunk(" b", None, None)]
    path, body = session.resume_request()
    assert (path, body["prompt"], body["max_tokens"]) == ("/v1/completions", [*PROMPT, 101, 102], 8)
    session.resumed()
    resumed = StreamHeader("completion", "r2", 1799, "m")
    event = session.rewrite(sse(resumed.delta_chunk(" c", [103], None, [*PROMPT, 101, 102])))
    assert event is not None
    assert json.loads(event[len(b"data: ") :]) == first.delta_chunk(" c", None, None)


def test_a_call_stopped_before_anything_was_forwarded_is_sent_again_as_it_was() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    assert session.can_resume
    assert session.resume_request() == ("/v1/chat/completions", {**CHAT_BODY, "return_token_ids": True})
    session.resumed()
    assert session.spell == 0  # the next stream is a first spell again


def test_what_a_resumed_request_would_not_reproduce_ends_resumability() -> None:
    header = StreamHeader("chat", "r1", 1700, "m")
    ignoring = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    rewrite_all(ignoring, [sse(header.role_chunk(None))])  # an engine that ignores return_token_ids
    assert not ignoring.can_resume
    reasoning = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    chunk = header.delta_chunk("", [7], None)
    chunk["choices"][0]["delta"] = {"reasoning": "hmm"}
    rewrite_all(reasoning, [sse(header.role_chunk(PROMPT)), sse(chunk)])
    assert not reasoning.can_resume
    ending = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    rewrite_all(ending, [sse(header.role_chunk(PROMPT)), sse(header.delta_chunk(" a", [1], "stop"))])
    assert not ending.can_resume


def test_a_chunk_sent_only_for_its_token_ids_is_dropped_and_errors_pass_unchanged() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    header = StreamHeader("chat", "r1", 1700, "m")
    held = header.delta_chunk("", [9], None)
    held["choices"][0]["delta"] = {}  # vLLM's chunk for tokens its parser holds back
    assert session.rewrite(sse(header.role_chunk(PROMPT))) is not None
    assert session.rewrite(sse(held)) is None
    assert session.generated == [9]
    error = sse({"error": {"message": "boom", "code": 500}})
    assert session.rewrite(error) == error


def test_the_relay_forgets_the_half_event_of_a_stopped_stream_and_reads_the_resumed_one() -> None:
    session = ResumeSession("chat", "/v1/chat/completions", CHAT_BODY)
    relay = SseRelay(False, VllmAdapter().read_usage, rewrite=session.rewrite)
    first = StreamHeader("chat", "r1", 1700, "m")
    events = chat_first_spell(True, first)
    out = relay.feed(b"".join(events[:3]) + events[3][:20])  # the stop falls inside the fourth event
    assert out == b"".join(chat_first_spell(False, first)[:3])  # byte for byte
    assert session.generated == [101, 102]
    relay.drop_partial()
    session.resumed()
    resumed = StreamHeader("completion", "r2", 1799, "m")
    out = relay.feed(sse(resumed.delta_chunk(" c", [103], "length", [*PROMPT, 101, 102])))
    out += relay.feed(sse(resumed.usage_chunk(5, 1, 0)) + sse("[DONE]"))
    assert decoded([out]) == [first.delta_chunk(" c", None, "length")]
    assert relay.usage is not None and (relay.usage.prompt_tokens, relay.usage.output_tokens) == (3, 3)
    assert relay.finish(b": report\n\n") == b": report\n\n" + sse("[DONE]")


@pytest.mark.parametrize("api", ["chat", "completion"])
@pytest.mark.parametrize(
    "text", [" plain", 'a "quoted" \\ bit', "ünï\u2028cödé", '"delta":{"reasoning":"x"}', ""]
)
def test_the_per_token_fast_path_does_what_decoding_the_chunk_does(
    api: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def spell() -> tuple[list[dict[str, Any]], list[int]]:
        body = CHAT_BODY if api == "chat" else COMPLETION_BODY
        session = ResumeSession(api, "/v1/chat/completions" if api == "chat" else "/v1/completions", body)
        header = StreamHeader(api, "r1", 1700, "m")  # type: ignore[arg-type]
        events = [sse(header.role_chunk(PROMPT))] if api == "chat" else []
        events.append(sse(header.delta_chunk(" a", [101], None, None if api == "chat" else PROMPT)))
        events += [sse(header.delta_chunk(text, [102 + i, 7], None)) for i in range(3)]
        events.append(sse(header.delta_chunk("end", [110], "length", last=True)))
        return rewrite_all(session, events), session.generated

    taken: list[bool] = []
    original = ResumeSession._fast

    def spy(self: ResumeSession, event: bytes) -> bytes | None:
        out = original(self, event)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(ResumeSession, "_fast", spy)
    fast = spell()
    assert taken.count(True) == (4 if api == "chat" else 3)  # decoded: the ones with prompt ids, the last
    monkeypatch.setattr(ResumeSession, "_fast", lambda self, event: None)
    assert fast == spell()
    assert fast[1] == [101, 102, 7, 103, 7, 104, 7, 110]
