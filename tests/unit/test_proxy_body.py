"""Request bodies: validation errors (400 with the field), the token estimate and the routing prefix."""

from __future__ import annotations

import json

import pytest

from autellix.api_errors import ApiError, error_body
from autellix.proxy.apis import PREFIX_CHARS, parse_call_body
from autellix.proxy.tokens import PER_MESSAGE_TOKENS, chat_tokens, prompt_tokens, text_tokens


def chat(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def raw_error(kind: str, raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_call_body(kind, raw)
    return caught.value


@pytest.mark.parametrize(
    ("kind", "raw", "param", "code"),
    [
        ("chat", b"{not json", None, "invalid_json"),
        ("chat", b"\xff\xfe", None, "invalid_json"),
        ("chat", b"[1, 2]", None, "invalid_json"),
        ("chat", json.dumps({"model": "m"}).encode(), "messages", "missing_field"),
        ("chat", json.dumps({"messages": "hi"}).encode(), "messages", "invalid_type"),
        ("chat", json.dumps({"messages": []}).encode(), "messages", "invalid_request"),
        ("chat", json.dumps({"messages": [1]}).encode(), "messages", "invalid_type"),
        ("chat", json.dumps({"messages": [{"content": "x"}]}).encode(), "messages", "invalid_type"),
        (
            "chat",
            json.dumps({"messages": [{"role": "u", "content": 3}]}).encode(),
            "messages",
            "invalid_type",
        ),
        ("chat", chat(stream="yes"), "stream", "invalid_type"),
        ("chat", chat(stream=1), "stream", "invalid_type"),
        ("chat", chat(model=5), "model", "invalid_type"),
        ("chat", chat(max_tokens="10"), "max_tokens", "invalid_type"),
        ("chat", chat(max_tokens=True), "max_tokens", "invalid_type"),
        ("chat", chat(n=1.5), "n", "invalid_type"),
        ("chat", chat(metadata=["x"]), "metadata", "invalid_type"),
        ("chat", chat(stream_options=True), "stream_options", "invalid_type"),
        ("completion", json.dumps({"model": "m"}).encode(), "prompt", "missing_field"),
        ("completion", json.dumps({"prompt": 5}).encode(), "prompt", "invalid_type"),
        ("completion", json.dumps({"prompt": [1, "a"]}).encode(), "prompt", "invalid_type"),
        ("completion", json.dumps({"prompt": []}).encode(), "prompt", "invalid_type"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(kind, raw, param, code) -> None:
    error = raw_error(kind, raw)
    assert (error.status, error.param, error.code) == (400, param, code)
    body = error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "invalid_request_error"


def test_a_good_chat_body() -> None:
    body = parse_call_body("chat", chat(stream=True, metadata={"program_id": "p"}))
    assert (body.api, body.model, body.stream, body.metadata) == ("chat", "m", True, {"program_id": "p"})
    assert body.input_tokens == text_tokens(2) + PER_MESSAGE_TOKENS
    assert body.prefix == "hi"


def test_nulls_count_as_absent_and_model_is_optional() -> None:
    body = parse_call_body(
        "chat", json.dumps({"messages": [{"role": "u", "content": None}], "stream": None}).encode()
    )
    assert (body.model, body.stream, body.metadata) == (None, False, None)


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [("abcd" * 10, 10), ("abcde", 2), ([1, 2, 3], 3), (["abcd", "abcdabcd"], 3), ([[1, 2], [3]], 3), ("", 0)],
)
def test_prompt_token_estimate(prompt, tokens) -> None:
    assert prompt_tokens(prompt) == tokens


def test_chat_token_estimate_counts_text_parts_and_a_per_message_share() -> None:
    messages = [
        {"role": "system", "content": "x" * 400},
        {
            "role": "user",
            "content": [{"type": "text", "text": "y" * 40}, {"type": "image_url", "image_url": {}}],
        },
    ]
    assert chat_tokens(messages) == 110 + 2 * PER_MESSAGE_TOKENS


def test_a_long_prompt_crosses_the_papers_threshold_and_the_prefix_is_capped() -> None:
    body = parse_call_body("chat", chat(messages=[{"role": "user", "content": "w" * 9000}]))
    assert body.input_tokens > 2048
    assert len(body.prefix) == PREFIX_CHARS


def test_error_body_types_by_status() -> None:
    assert error_body(404, "x")["error"]["type"] == "not_found_error"
    assert error_body(503, "x")["error"]["type"] == "service_unavailable"
    assert error_body(418, "x")["error"]["type"] == "invalid_request_error"
    assert error_body(599, "x")["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_bodies_use_anthropics_types_by_status(status: int, kind: str) -> None:
    assert error_body(status, "x", code="c", shape="anthropic") == {
        "type": "error",
        "error": {"type": kind, "message": "x"},
    }
    assert ApiError(status, "x", code="c").body("anthropic")["error"]["type"] == kind
