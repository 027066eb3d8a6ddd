"""The simulated engine refuses what vLLM 0.32 refuses (simulator/validation.py).

Statuses were taken from a real vLLM server; tests/real_vllm/test_parity.py checks them against one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from autellix.simulator import tokenizer
from autellix.simulator.openai_api import ApiError, parse_request
from autellix.simulator.validation import RequestRejected, check_content_type, encode_text

MESSAGE = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f"}}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": MESSAGE, "max_tokens": 2, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"prompt": "hi", "max_tokens": 2, **fields}


REFUSED = [
    ("chat", chat(tools="x"), "tools"),
    ("chat", chat(tools=[{"type": "function"}]), "tools"),
    ("chat", chat(tools=[]), "tools"),
    ("chat", chat(tool_choice="auto"), "tool_choice"),
    ("chat", chat(tools=TOOLS, tool_choice="x"), "tool_choice"),
    ("chat", chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "g"}}), "tool_choice"),
    ("chat", chat(logprobs="x"), "logprobs"),
    ("chat", chat(top_logprobs=1_000_000), "top_logprobs"),
    ("chat", chat(logprobs=True, top_logprobs=21), "logprobs"),
    ("chat", chat(logprobs=True, top_logprobs=-1), "logprobs"),
    ("completion", completion(logprobs=1_000_000), "logprobs"),
    ("completion", completion(prompt_logprobs=100), "prompt_logprobs"),
    ("chat", chat(stop=5), "stop"),
    ("completion", completion(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("chat", chat(stop=[""]), "stop"),
    ("chat", {"messages": [{"role": "user", "content": None}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "foo", "text": "x"}]}]}, "messages"),
    (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages",
    ),
    ("completion", completion(prompt=[-1, 5]), "prompt"),
    ("completion", completion(prompt=[tokenizer.VOCAB_SIZE]), "prompt"),
    ("completion", completion(prompt=[[2**63]]), "prompt"),
    ("chat", chat(temperature=float("nan")), "temperature"),
    ("chat", chat(temperature=-1), "temperature"),
    ("chat", chat(temperature=2.01), "temperature"),
    ("chat", chat(top_p=0), "top_p"),
    ("chat", chat(top_k=-5), "top_k"),
    ("chat", chat(min_p=2), "min_p"),
    ("chat", chat(presence_penalty=5), "presence_penalty"),
    ("chat", chat(repetition_penalty=0), "repetition_penalty"),
    ("chat", chat(n=0), "n"),
    ("chat", chat(min_tokens=10), "min_tokens"),
    ("chat", chat(logit_bias={"abc": 1}), "logit_bias"),
    ("chat", chat(logit_bias={"-1": 1}), "logit_bias"),
    ("chat", chat(response_format="x"), "response_format"),
    ("chat", chat(response_format={"type": "json_schema"}), "response_format"),
    ("chat", chat(continue_final_message=True), None),
    ("chat", chat(user=5), "user"),
    ("completion", completion(suffix=""), "suffix"),
    ("completion", completion(prompt_embeds="x"), "prompt_embeds"),
]


@pytest.mark.parametrize(("kind", "body", "param"), REFUSED, ids=[json.dumps(c[1])[:60] for c in REFUSED])
def test_what_vllm_refuses_is_a_400(kind: str, body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(kind, json.dumps(body).encode())  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert caught.value.param == param


ACCEPTED = [
    ("chat", {"messages": [{"role": "user"}], "max_tokens": 2}),  # a missing content is fine in vLLM
    ("chat", {"messages": [*MESSAGE, {"role": "assistant", "content": None}, *MESSAGE]}),
    ("chat", chat(tool_choice="none")),
    ("chat", chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "f"}})),
    ("chat", chat(top_logprobs=0)),
    ("chat", chat(logprobs=True, top_logprobs=20)),
    ("chat", chat(temperature=2, top_p=1, top_k=-1, min_p=0, presence_penalty=2, repetition_penalty=3)),
    ("chat", chat(n=None)),
    ("chat", chat(stop=[], logit_bias={"5": 200})),
    ("completion", completion(prompt=[5.0, 6.0])),  # whole floats are ids, as pydantic's lax ints
    ("completion", completion(logprobs=0, echo=True)),
]


@pytest.mark.parametrize(("kind", "body"), ACCEPTED, ids=[json.dumps(c[1])[:60] for c in ACCEPTED])
def test_what_vllm_accepts_still_parses(kind: str, body: dict[str, Any]) -> None:
    parse_request(kind, json.dumps(body).encode())  # type: ignore[arg-type]


def test_a_temperature_sent_as_the_string_nan_is_refused_like_a_number() -> None:
    with pytest.raises(ApiError):
        parse_request("completion", json.dumps(completion(temperature="NaN")).encode())


def test_text_with_a_lone_surrogate_and_bodies_not_sent_as_json_are_refused() -> None:
    with pytest.raises(RequestRejected):
        encode_text("hi\ud800")
    assert encode_text("hi") == tokenizer.encode("hi")
    for content_type in ("text/plain", "application/octet-stream", "application/x-www-form-urlencoded"):
        with pytest.raises(RequestRejected, match="application/json"):
            check_content_type(content_type)
    check_content_type("application/json")
