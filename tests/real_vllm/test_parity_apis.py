"""Parity of the Responses and Messages APIs: ``autellix sim-engine`` and real vLLM 0.32 (both storing
responses) answer the same requests with the same shapes, statuses and stream event sequences.

Shapes are compared as test_parity.py compares chat's (same keys and JSON types at every level, null
matching anything); streams by the sequence of their event names and the shape of each kind of event.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.real_vllm.test_parity import both, differences, engines, shape

pytestmark = pytest.mark.real_vllm
__all__ = ["engines"]  # the fixture, shared with test_parity.py

Engines = tuple[str, str, str]
RESPONSE = {"input": "hello world", "max_output_tokens": 4, "ignore_eos": True}
MESSAGE = {"max_tokens": 4, "ignore_eos": True, "messages": [{"role": "user", "content": "hello world"}]}


def events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.split("\n\n"):
        lines = block.splitlines()
        name = next((line[6:].strip() for line in lines if line.startswith("event:")), "")
        data = "".join(line[5:].strip() for line in lines if line.startswith("data:"))
        if data:
            out.append((name, json.loads(data)))
    return out


def stream_both(
    engines: Engines, path: str, body: dict[str, Any]
) -> tuple[list[tuple[str, dict[str, Any]]], ...]:
    sim_url, real_url, model = engines
    with httpx.Client(timeout=60) as http:
        return tuple(
            events(http.post(url + path, json={"model": model, **body}).text) for url in (sim_url, real_url)
        )


def test_a_response_and_its_continuation_have_vllms_shape(engines: Engines) -> None:
    sim, real = both(engines, "/v1/responses", RESPONSE)
    assert (sim.status_code, real.status_code) == (200, 200), (sim.text, real.text)
    assert differences(shape(sim.json()), shape(real.json())) == []
    assert sim.json()["status"] == real.json()["status"] == "incomplete"  # ignore_eos hit the limit
    assert sim.json()["usage"]["output_tokens"] == real.json()["usage"]["output_tokens"] == 4
    chained_calls = []
    for url, first in ((engines[0], sim), (engines[1], real)):
        body = {"model": engines[2], **RESPONSE, "previous_response_id": first.json()["id"]}
        chained_calls.append(httpx.post(url + "/v1/responses", json=body, timeout=60))
    sim_next, real_next = chained_calls
    for first, chained in ((sim, sim_next), (real, real_next)):
        assert chained.status_code == 200 and chained.json()["previous_response_id"] == first.json()["id"]
        assert chained.json()["usage"]["input_tokens"] > first.json()["usage"]["input_tokens"]  # the history
    got = [
        httpx.get(f"{url}/v1/responses/{r.json()['id']}", timeout=60)
        for url, r in ((engines[0], sim), (engines[1], real))
    ]
    assert [g.status_code for g in got] == [200, 200]
    assert differences(shape(got[0].json()), shape(got[1].json())) == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/responses/resp_missing", None),
        ("POST", "/v1/responses/resp_missing/cancel", None),
        ("POST", "/v1/responses", {**RESPONSE, "previous_response_id": "resp_missing"}),
        ("POST", "/v1/responses", {"input": 5}),
        ("POST", "/v1/responses", {"max_output_tokens": 3}),
        ("POST", "/v1/messages", {"messages": [{"role": "user", "content": "x"}]}),
        ("POST", "/v1/messages", {"max_tokens": 3}),
        ("POST", "/v1/messages", {**MESSAGE, "max_tokens": 100_000}),
        ("POST", "/v1/messages/count_tokens", {}),
    ],
)
def test_bad_requests_get_the_same_status_and_error_shape(
    engines: Engines, method: str, path: str, body: dict[str, Any] | None
) -> None:
    sim_url, real_url, model = engines
    with httpx.Client(timeout=60) as http:
        sim, real = (
            http.request(method, url + path, json=None if body is None else {"model": model, **body})
            for url in (sim_url, real_url)
        )
    assert sim.status_code == real.status_code and sim.status_code >= 400, (sim.text, real.text)
    assert differences(shape(sim.json()), shape(real.json())) == [], (sim.text, real.text)


def test_a_synchronous_response_cannot_be_cancelled_on_either(engines: Engines) -> None:
    sim, real = both(engines, "/v1/responses", RESPONSE)
    cancels = [
        httpx.post(f"{url}/v1/responses/{r.json()['id']}/cancel", timeout=60)
        for url, r in ((engines[0], sim), (engines[1], real))
    ]
    assert [c.status_code for c in cancels] == [400, 400]
    assert cancels[0].json()["error"]["message"] == cancels[1].json()["error"]["message"]


@pytest.mark.parametrize(("path", "body"), [("/v1/responses", RESPONSE), ("/v1/messages", MESSAGE)])
def test_streams_have_the_same_event_sequence_and_shapes(
    engines: Engines, path: str, body: dict[str, Any]
) -> None:
    sim, real = stream_both(engines, path, {**body, "stream": True})
    names = [[name for name, _ in stream] for stream in (sim, real)]
    collapse = [[n for i, n in enumerate(ns) if i == 0 or n != ns[i - 1]] for ns in names]  # deltas vary
    assert collapse[0] == collapse[1], names
    firsts = [{name: shape(data) for name, data in reversed(stream)} for stream in (sim, real)]
    for name in firsts[1]:
        assert differences(firsts[0][name], firsts[1][name]) == [], name


def test_a_message_and_its_token_count_have_vllms_shape(engines: Engines) -> None:
    sim, real = both(engines, "/v1/messages", MESSAGE)
    assert (sim.status_code, real.status_code) == (200, 200), (sim.text, real.text)
    assert differences(shape(sim.json()), shape(real.json())) == []
    assert sim.json()["usage"]["output_tokens"] == real.json()["usage"]["output_tokens"] == 4
    assert sim.json()["stop_reason"] == real.json()["stop_reason"] == "max_tokens"
    sim_count, real_count = both(engines, "/v1/messages/count_tokens", {"messages": MESSAGE["messages"]})
    assert differences(shape(sim_count.json()), shape(real_count.json())) == []
    bad_model = [
        httpx.post(url + "/v1/messages", json={**MESSAGE, "model": "nope"}, timeout=60) for url in engines[:2]
    ]
    assert [b.status_code for b in bad_model] == [404, 404]
    assert [b.json()["type"] for b in bad_model] == ["error", "error"]  # Anthropic's envelope, vLLM's words
