"""Parity: ``autellix sim-engine`` and real vLLM 0.32 agree on the API surface our services use.

Both servers get the same requests (the simulated engine serves the same model name and max_model_len)
and must answer with the same *shape*: the same keys at every level with the same JSON types, for
responses, every kind of stream chunk (role, content, final, usage) and error bodies; the same status
for the same bad input; and the metric names the sidecar reads or reference.md §4 lists. Values differ
(random weights against a synthetic tokenizer), so only shapes and statuses are compared.

A vLLM field that is null in one answer and filled in another (``token_ids``, ``prompt_token_ids``,
``metrics``) is compared as "null or its type": the simulated engine must use the same key and either
null or the same type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autellix.engine_adapters import vllm as vllm_adapter
from autellix.launch import ServiceProcess, autellix_command, free_port
from tests.real_vllm.conftest import MAX_MODEL_LEN, TINY_FCFS, VllmPool, metric_names

pytestmark = pytest.mark.real_vllm

Shape = Any  # nested dicts / one-item lists of type names


def shape(value: Any) -> Shape:
    """The JSON type structure of a value: dict keys kept, lists by their first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def differences(sim: Shape, real: Shape, path: str = "$") -> list[str]:
    """Where two shapes disagree: keys on one side only, or different types (null matches anything)."""
    if sim == "null" or real == "null":
        return []
    if isinstance(sim, dict) and isinstance(real, dict):
        out = [f"{path}.{key}: only in vLLM" for key in real if key not in sim]
        out += [f"{path}.{key}: only in the sim" for key in sim if key not in real]
        for key in sim:
            if key in real:
                out += differences(sim[key], real[key], f"{path}.{key}")
        return out
    if isinstance(sim, list) and isinstance(real, list):
        if sim and real:
            return differences(sim[0], real[0], f"{path}[0]")
        return []
    if {sim, real} <= {"int", "float"} and path.endswith(("created", "_ms", "_time")):
        return []
    return [] if sim == real else [f"{path}: sim {sim!r}, vLLM {real!r}"]


@pytest.fixture(scope="module")
def engines(vllm_pool: VllmPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(sim URL, vLLM URL, model name): the tiny FCFS vLLM and a fast simulated engine like it."""
    real = vllm_pool.use(TINY_FCFS)[0]
    port = free_port()
    flags = [
        "--host", "127.0.0.1", "--port", str(port), "--model-name", real.model,
        "--max-model-len", str(MAX_MODEL_LEN), "--profile", "unit", "--time-scale", "0.001",
        "--enable-responses-store",
    ]  # fmt: skip
    sim = ServiceProcess(
        name="sim-engine",
        args=autellix_command("sim-engine", flags),
        url=f"http://127.0.0.1:{port}",
        log_path=tmp_path_factory.mktemp("sim") / "sim-engine.log",
    ).start(timeout=60)
    yield sim.url, real.url, real.model
    sim.stop()


def both(engines: tuple[str, str, str], path: str, body: dict[str, Any]) -> tuple[httpx.Response, ...]:
    sim_url, real_url, model = engines
    payload = {"model": model, **body}
    with httpx.Client(timeout=60) as http:
        return tuple(http.post(url + path, json=payload) for url in (sim_url, real_url))


CHAT = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 4, "ignore_eos": True}
COMPLETION = {"prompt": "the agent reads", "max_tokens": 4, "ignore_eos": True}
TOKEN_PROMPT = {"prompt": [5, 6, 7, 8, 9], "max_tokens": 4, "ignore_eos": True}

RESPONSE_CASES = [
    ("chat", "/v1/chat/completions", CHAT),
    ("chat with token ids", "/v1/chat/completions", {**CHAT, "return_token_ids": True}),
    ("completion", "/v1/completions", COMPLETION),
    ("completion of token ids", "/v1/completions", {**TOKEN_PROMPT, "return_token_ids": True}),
    ("completion with defaults", "/v1/completions", {"prompt": "default length"}),
]


@pytest.mark.parametrize(("name", "path", "body"), RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_responses_have_the_same_shape(
    engines: tuple[str, str, str], name: str, path: str, body: dict[str, Any]
) -> None:
    sim, real = both(engines, path, body)
    assert (sim.status_code, real.status_code) == (200, 200), (sim.text, real.text)
    assert differences(shape(sim.json()), shape(real.json())) == [], name
    usage_sim, usage_real = sim.json()["usage"], real.json()["usage"]
    assert isinstance(usage_real["prompt_tokens_details"]["cached_tokens"], int)
    assert isinstance(usage_sim["prompt_tokens_details"]["cached_tokens"], int)
    if "ignore_eos" in body:
        assert usage_sim["completion_tokens"] == usage_real["completion_tokens"] == body["max_tokens"]
    if "prompt" in body and isinstance(body["prompt"], list):
        assert usage_sim["prompt_tokens"] == usage_real["prompt_tokens"] == len(body["prompt"])
    if name == "completion with defaults":  # vLLM's completions default max_tokens is 16
        assert usage_real["completion_tokens"] <= 16 and usage_sim["completion_tokens"] <= 16


def chunk_kinds(raw: bytes) -> dict[str, Shape]:
    """The stream's chunks by kind (first, content, final, usage) and its terminator, as shapes."""
    events = [line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events and events[-1] == b"[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    kinds: dict[str, Shape] = {"first": shape(chunks[0])}
    for chunk in chunks[1:]:
        if not chunk["choices"]:
            kinds["usage"] = shape(chunk)
        elif chunk["choices"][0].get("finish_reason") is not None:
            kinds["final"] = shape(chunk)
        else:
            kinds.setdefault("content", shape(chunk))
    return kinds


STREAM_CASES = [
    ("chat stream", "/v1/chat/completions", {**CHAT, "stream": True}),
    (
        "chat stream with usage",
        "/v1/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    ),
    (
        "chat stream with token ids",
        "/v1/chat/completions",
        {**CHAT, "stream": True, "return_token_ids": True, "stream_options": {"include_usage": True}},
    ),
    (
        "completion stream with usage",
        "/v1/completions",
        {**COMPLETION, "stream": True, "stream_options": {"include_usage": True}},
    ),
    (
        "completion stream with token ids",
        "/v1/completions",
        {**TOKEN_PROMPT, "stream": True, "return_token_ids": True, "stream_options": {"include_usage": True}},
    ),
]


@pytest.mark.parametrize(("name", "path", "body"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_stream_chunks_have_the_same_shapes(
    engines: tuple[str, str, str], name: str, path: str, body: dict[str, Any]
) -> None:
    sim, real = both(engines, path, body)
    assert (sim.status_code, real.status_code) == (200, 200)
    assert sim.headers["content-type"].startswith("text/event-stream")
    assert real.headers["content-type"].startswith("text/event-stream")
    sim_kinds, real_kinds = chunk_kinds(sim.content), chunk_kinds(real.content)
    assert sorted(sim_kinds) == sorted(real_kinds), name
    found = [f"{kind}: {d}" for kind in real_kinds for d in differences(sim_kinds[kind], real_kinds[kind])]
    assert found == [], name


MESSAGE = [{"role": "user", "content": "hi"}]
TOO_LONG = [5] * (MAX_MODEL_LEN + 10)
CHAT_PATH = "/v1/chat/completions"
SHORT_CHAT = {"messages": MESSAGE, "max_tokens": 2}
SHORT_PROMPT = {"prompt": "hi", "max_tokens": 2}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
NAMED_G = {"type": "function", "function": {"name": "g"}}
ASSISTANT_NULL = {"role": "assistant", "content": None}
FOO_PART = {"type": "foo", "text": "x"}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}

BAD_INPUTS: list[tuple[str, str, bytes | dict[str, Any]]] = [
    ("malformed JSON (chat)", "/v1/chat/completions", b'{"messages": ['),
    ("malformed JSON (completions)", "/v1/completions", b"nope"),
    ("body is a list", "/v1/completions", b"[1, 2]"),
    ("missing messages", "/v1/chat/completions", {"max_tokens": 2}),
    ("messages not a list", "/v1/chat/completions", {"messages": "hi"}),
    ("message without role", "/v1/chat/completions", {"messages": [{"content": "hi"}]}),
    ("empty messages", "/v1/chat/completions", {"messages": []}),
    ("missing prompt", "/v1/completions", {"max_tokens": 2}),
    ("max_tokens a word", "/v1/chat/completions", {"messages": MESSAGE, "max_tokens": "five"}),
    ("max_tokens fractional", "/v1/completions", {"prompt": "hi", "max_tokens": 2.5}),
    ("max_tokens a numeric string", "/v1/completions", {"prompt": "hi", "max_tokens": "3"}),
    ("max_tokens a whole float", "/v1/completions", {"prompt": "hi", "max_tokens": 3.0}),
    ("negative max_tokens", "/v1/chat/completions", {"messages": MESSAGE, "max_tokens": -1}),
    ("zero max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": 0}),
    ("fractional priority", "/v1/chat/completions", {"messages": MESSAGE, "max_tokens": 2, "priority": 1.5}),
    ("word priority", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": "high"}),
    ("null priority", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": None}),
    ("priority beyond int64", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": 2**63}),
    ("numeric-string priority", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": "3"}),
    ("integer priority on FCFS", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "priority": 3}),
    ("prompt longer than the model", "/v1/completions", {"prompt": TOO_LONG, "max_tokens": 1}),
    ("prompt fills the model", "/v1/completions", {"prompt": [5] * MAX_MODEL_LEN, "max_tokens": 1}),
    ("prompt + max_tokens too long", "/v1/completions", {"prompt": [5] * 2000, "max_tokens": 100}),
    ("max_tokens beyond the model", "/v1/completions", {"prompt": "hi", "max_tokens": MAX_MODEL_LEN + 1}),
    (
        "stream_options without stream",
        "/v1/chat/completions",
        {"messages": MESSAGE, "max_tokens": 2, "stream_options": {"include_usage": True}},
    ),
    ("empty token prompt", "/v1/completions", {"prompt": [], "max_tokens": 2}),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-9", "messages": MESSAGE, "max_tokens": 2}),
    # fields the simulated engine does not use, checked as vLLM checks them (simulator/validation.py)
    ("tools not a list", CHAT_PATH, {**SHORT_CHAT, "tools": "x"}),
    ("tool without a function", CHAT_PATH, {**SHORT_CHAT, "tools": [{"type": "function"}]}),
    ("tool of another type", CHAT_PATH, {**SHORT_CHAT, "tools": [{"type": "x", "function": {"name": "f"}}]}),
    ("tools empty", CHAT_PATH, {**SHORT_CHAT, "tools": []}),
    ("tool_choice without tools", CHAT_PATH, {**SHORT_CHAT, "tool_choice": "auto"}),
    ("tool_choice none without tools", CHAT_PATH, {**SHORT_CHAT, "tool_choice": "none"}),
    ("named tool_choice of no tool", CHAT_PATH, {**SHORT_CHAT, "tools": TOOLS, "tool_choice": NAMED_G}),
    ("tool_choice a word", CHAT_PATH, {**SHORT_CHAT, "tools": TOOLS, "tool_choice": "x"}),
    ("logprobs a word", CHAT_PATH, {**SHORT_CHAT, "logprobs": "x"}),
    ("top_logprobs without logprobs", CHAT_PATH, {**SHORT_CHAT, "top_logprobs": 1000000}),
    ("top_logprobs 0 without logprobs", CHAT_PATH, {**SHORT_CHAT, "top_logprobs": 0}),
    ("top_logprobs above 20", CHAT_PATH, {**SHORT_CHAT, "logprobs": True, "top_logprobs": 1000000}),
    ("top_logprobs -1 (the vocabulary)", CHAT_PATH, {**SHORT_CHAT, "logprobs": True, "top_logprobs": -1}),
    ("completion logprobs above 20", "/v1/completions", {**SHORT_PROMPT, "logprobs": 1000000}),
    ("completion logprobs a word", "/v1/completions", {**SHORT_PROMPT, "logprobs": "x"}),
    ("prompt_logprobs above 20", "/v1/completions", {**SHORT_PROMPT, "prompt_logprobs": 100}),
    ("stop a number", CHAT_PATH, {**SHORT_CHAT, "stop": 5}),
    ("stop of numbers", CHAT_PATH, {**SHORT_CHAT, "stop": [1, 2]}),
    ("five stop strings", "/v1/completions", {**SHORT_PROMPT, "stop": ["a", "b", "c", "d", "e"]}),
    ("an empty stop string", CHAT_PATH, {**SHORT_CHAT, "stop": [""]}),
    ("message without content", CHAT_PATH, {"messages": [{"role": "user"}], "max_tokens": 2}),
    ("user message with null content", CHAT_PATH, {"messages": [{"role": "user", "content": None}]}),
    ("assistant message with null content", CHAT_PATH, {"messages": [*MESSAGE, ASSISTANT_NULL, *MESSAGE]}),
    ("content a number", CHAT_PATH, {"messages": [{"role": "user", "content": 5}], "max_tokens": 2}),
    ("text part without text", CHAT_PATH, {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    ("content part of no type", CHAT_PATH, {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("content part of an unknown type", CHAT_PATH, {"messages": [{"role": "user", "content": [FOO_PART]}]}),
    ("image part on a text model", CHAT_PATH, {"messages": [{"role": "user", "content": [IMAGE_PART]}]}),
    ("negative token id", "/v1/completions", {"prompt": [-1, 5], "max_tokens": 2}),
    ("out-of-vocabulary token id", "/v1/completions", {"prompt": [10**9], "max_tokens": 2}),
    ("token id beyond int64", "/v1/completions", {"prompt": [2**63], "max_tokens": 2}),
    ("negative id in a nested prompt", "/v1/completions", {"prompt": [[-1]], "max_tokens": 2}),
    ("whole-float token ids", "/v1/completions", {"prompt": [5.0, 6.0], "max_tokens": 2}),
    ("negative temperature", CHAT_PATH, {**SHORT_CHAT, "temperature": -1}),
    ("temperature above 2", CHAT_PATH, {**SHORT_CHAT, "temperature": 2.01}),
    ("temperature 'NaN'", "/v1/completions", {**SHORT_PROMPT, "temperature": "NaN"}),
    ("top_p 0", CHAT_PATH, {**SHORT_CHAT, "top_p": 0}),
    ("top_p 2", CHAT_PATH, {**SHORT_CHAT, "top_p": 2}),
    ("top_k -5", CHAT_PATH, {**SHORT_CHAT, "top_k": -5}),
    ("top_k -1 (off)", CHAT_PATH, {**SHORT_CHAT, "top_k": -1}),
    ("min_p 2", CHAT_PATH, {**SHORT_CHAT, "min_p": 2}),
    ("presence_penalty 5", CHAT_PATH, {**SHORT_CHAT, "presence_penalty": 5}),
    ("frequency_penalty -3", CHAT_PATH, {**SHORT_CHAT, "frequency_penalty": -3}),
    ("repetition_penalty 0", CHAT_PATH, {**SHORT_CHAT, "repetition_penalty": 0}),
    ("n 0", CHAT_PATH, {**SHORT_CHAT, "n": 0}),
    ("n null", CHAT_PATH, {**SHORT_CHAT, "n": None}),
    ("min_tokens above max_tokens", CHAT_PATH, {**SHORT_CHAT, "min_tokens": 10}),
    ("negative min_tokens", CHAT_PATH, {**SHORT_CHAT, "min_tokens": -1}),
    ("logit_bias a word", CHAT_PATH, {**SHORT_CHAT, "logit_bias": "x"}),
    ("logit_bias of a non-integer key", CHAT_PATH, {**SHORT_CHAT, "logit_bias": {"abc": 1}}),
    ("logit_bias out of vocabulary", CHAT_PATH, {**SHORT_CHAT, "logit_bias": {"1000000": 1}}),
    ("response_format a word", CHAT_PATH, {**SHORT_CHAT, "response_format": "x"}),
    ("response_format of an unknown type", CHAT_PATH, {**SHORT_CHAT, "response_format": {"type": "bogus"}}),
    ("json_schema without a schema", CHAT_PATH, {**SHORT_CHAT, "response_format": {"type": "json_schema"}}),
    ("suffix", "/v1/completions", {**SHORT_PROMPT, "suffix": "x"}),
    ("user a number", CHAT_PATH, {**SHORT_CHAT, "user": 5}),
    ("echo a word", CHAT_PATH, {**SHORT_CHAT, "echo": "x"}),
    ("continue and add a prompt", CHAT_PATH, {**SHORT_CHAT, "continue_final_message": True}),
    ("stop_token_ids out of vocabulary", CHAT_PATH, {**SHORT_CHAT, "stop_token_ids": [10**9]}),
    ("truncate_prompt_tokens -5", CHAT_PATH, {**SHORT_CHAT, "truncate_prompt_tokens": -5}),
]


@pytest.mark.parametrize(("name", "path", "body"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_get_the_same_status_and_error_shape(
    engines: tuple[str, str, str], name: str, path: str, body: bytes | dict[str, Any]
) -> None:
    sim_url, real_url, model = engines
    with httpx.Client(timeout=60) as http:
        if isinstance(body, bytes):
            replies = [
                http.post(url + path, content=body, headers={"Content-Type": "application/json"})
                for url in (sim_url, real_url)
            ]
        else:
            replies = [http.post(url + path, json={"model": model, **body}) for url in (sim_url, real_url)]
    sim, real = replies
    assert sim.status_code == real.status_code, (name, sim.text[:300], real.text[:300])
    if real.status_code >= 400:
        error_shape = {"message": "str", "type": "str", "param": "str", "code": "int"}
        for reply in replies:
            assert set(reply.json()) == {"error"}
            assert differences(shape(reply.json()["error"]), error_shape) == []
            assert reply.json()["error"]["code"] == reply.status_code


BROKEN_BODIES: list[tuple[str, bytes, str]] = [
    ("nested 50,000 levels", b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json"),
    (
        "an integer of 5000 digits",
        b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
        "application/json",
    ),
    ("not UTF-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "application/json"),
    (
        "NaN temperature",
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        "application/json",
    ),
    (
        "Infinity max_tokens",
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
        "application/json",
    ),
    (
        "duplicate keys, the last valid",
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1, "max_tokens": 2}',
        "application/json",
    ),
    (
        "sent as text/plain",
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}',
        "text/plain",
    ),
    ("an empty body", b"", "application/json"),
    (
        "a lone surrogate in the text",
        b'{"messages": [{"role": "user", "content": "hi\\ud800"}]}',
        "application/json",
    ),
]


@pytest.mark.parametrize(("name", "raw", "content_type"), BROKEN_BODIES, ids=[c[0] for c in BROKEN_BODIES])
def test_broken_bodies_get_the_same_status(
    engines: tuple[str, str, str], name: str, raw: bytes, content_type: str
) -> None:
    """Bodies vLLM's web framework refuses before its own checks (its errors are then FastAPI's
    ``{"detail": ...}``); the simulated engine answers them in the OpenAI shape of its other errors."""
    sim_url, real_url, model = engines
    raw = raw.replace(b'{"messages"', b'{"model": "' + model.encode() + b'", "messages"', 1)
    with httpx.Client(timeout=60) as http:
        sim, real = (
            http.post(url + CHAT_PATH, content=raw, headers={"Content-Type": content_type})
            for url in (sim_url, real_url)
        )
    assert sim.status_code == real.status_code, (name, sim.text[:300], real.text[:300])
    if sim.status_code >= 400:
        assert set(sim.json()) == {"error"} and sim.json()["error"]["code"] == sim.status_code


# Read by the sidecar's vLLM adapter, or listed in reference.md §4 (counters with vLLM 0.32's _total).
METRIC_NAMES = {
    vllm_adapter.RUNNING,
    vllm_adapter.WAITING,
    vllm_adapter.KV_USAGE[0],
    vllm_adapter.PREEMPTIONS[0],
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:prompt_tokens_cached_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:cache_config_info",
    *(
        f"vllm:{histogram}_{suffix}"
        for histogram in (
            "time_to_first_token_seconds",
            "inter_token_latency_seconds",
            "e2e_request_latency_seconds",
            "request_queue_time_seconds",
        )
        for suffix in ("bucket", "sum", "count")
    ),
}


def test_metric_names_agree(engines: tuple[str, str, str]) -> None:
    sim_url, real_url, _model = engines
    both(engines, "/v1/completions", COMPLETION)  # every histogram has a sample
    with httpx.Client(timeout=30) as http:
        sim_names = metric_names(http.get(sim_url + "/metrics").text)
        real_names = metric_names(http.get(real_url + "/metrics").text)
    assert METRIC_NAMES - real_names == set(), "vLLM no longer exposes these"
    assert METRIC_NAMES - sim_names == set(), "the simulated engine lacks these"
    sim_vllm_names = {name for name in sim_names if name.startswith("vllm:")}
    assert sim_vllm_names - real_names == set(), "the simulated engine invents these"


def test_models_and_tokenize_have_the_same_shape(engines: tuple[str, str, str]) -> None:
    sim_url, real_url, model = engines
    with httpx.Client(timeout=30) as http:
        models = [http.get(url + "/v1/models").json() for url in (sim_url, real_url)]
        assert [[card["id"] for card in reply["data"]] for reply in models] == [[model], [model]]
        assert differences(shape(models[0]), shape(models[1])) == []
        for body in ({"prompt": "the agent"}, {"messages": MESSAGE}):
            sim, real = (
                http.post(url + "/tokenize", json={"model": model, **body}) for url in (sim_url, real_url)
            )
            assert (sim.status_code, real.status_code) == (200, 200)
            assert differences(shape(sim.json()), shape(real.json())) == [], body
