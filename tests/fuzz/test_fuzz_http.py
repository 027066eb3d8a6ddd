"""Generated bodies, headers and query strings for every route of the proxy, the sidecar and the engine.

Properties (tests/fuzz/properties.py): never a 5xx, an answer within a bound, an error in the route's
API shape, the service still serving afterwards, and the witness program's counters unchanged.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import EXAMPLES, Fleet, witness_state
from tests.fuzz.properties import TIMEOUT, check_answer, check_stream

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

GENERATION = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "proxy": (
        *(("POST", p) for p in GENERATION),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/programs"),
        ("GET", "/v1/programs/{id}"),
        ("DELETE", "/v1/programs/{id}"),
        ("GET", "/v1/models"),
        ("GET", "/v1/responses/{id}"),
        ("POST", "/v1/responses/{id}/cancel"),
        ("GET", "/nowhere"),
    ),
    "sidecar": (
        *(("POST", p) for p in GENERATION),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/responses/{id}"),
    ),
    "engine": (
        *(("POST", p) for p in GENERATION),
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/responses/{id}"),
    ),
}
TARGETS = [(service, method, path) for service, routes in ROUTES.items() for method, path in routes]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["sim-llama", "user", "assistant", "system", "text", "auto", ""]),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = (
    "model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens", "max_output_tokens",
    "stream", "temperature", "top_p", "n", "stop", "tools", "tool_choice", "logprobs", "top_logprobs",
    "stream_options", "metadata", "priority", "system", "instructions", "previous_response_id", "id",
    "tokens", "seed", "ignore_eos", "response_format", "user",
)  # fmt: skip
_small_tokens = st.integers(min_value=-5, max_value=8)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]), "content": json_values}
    ),
    max_size=3,
)
near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["sim-llama", "absent-model", 5])},
    optional={
        "messages": _messages | json_values,
        "prompt": st.text(max_size=30) | st.lists(st.integers(-3, 70000), max_size=4) | json_values,
        "input": st.text(max_size=30) | json_values,
        "max_tokens": _small_tokens | json_values,
        "max_output_tokens": _small_tokens,
        "stream": st.booleans() | json_values,
        **{name: json_values for name in FIELDS[8:]},
    },
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies of every kind: near-valid calls, any JSON, broken JSON, bytes that are not UTF-8."""
    kind = draw(st.sampled_from(["near", "json", "bytes", "specials", "duplicate", "nested", "empty"]))
    if kind == "near":
        return json.dumps(draw(near_valid)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "specials":
        special = draw(
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-0", "1" * 400])
        )
        field = draw(st.sampled_from(FIELDS))
        head = '{"model": "sim-llama", "messages": [{"role": "user", "content": "x"}]'
        return f'{head}, "{field}": {special}}}'.encode()
    if kind == "duplicate":
        return (
            b'{"model": "sim-llama", "messages": [], "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 1, "max_tokens": 2}'
        )
    if kind == "nested":
        depth = draw(st.sampled_from([300, 5000, 50000]))
        return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    return b""


_header_names = st.sampled_from(
    [
        "X-Program-Id", "X-Thread-Id", "X-Session-Id", "X-Program-Kind", "X-Request-Timeout",
        "X-Autellix-Program-Service", "X-Autellix-Call-Id", "X-Autellix-Input-Tokens", "X-Autellix-Arrival",
        "Content-Type", "Accept", "Authorization", "x-api-key", "anthropic-version", "Content-Encoding",
    ]
)  # fmt: skip
_header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip),
    st.sampled_from(["", "nan", "-1", "1e308", "inf", "0", "text/plain", "gzip", "a" * 9000]),
)
headers = st.dictionaries(_header_names, _header_values, max_size=4)
queries = st.dictionaries(
    st.sampled_from(["stream", "limit", "after", "x", "include", "starting_after"]),
    st.text(max_size=10) | st.sampled_from(["true", "false", "%ff", "1e9"]),
    max_size=3,
)
ids = st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["%00", "a" * 600, "..", "resp_x"]))


def _request(
    fleet: Fleet,
    target: tuple[str, str, str],
    body: bytes,
    head: dict[str, str],
    query: dict[str, str],
    rid: str,
) -> None:
    service, method, template = target
    path = template.replace("{id}", urllib.parse.quote(rid, safe="") or "x")
    base = fleet.urls()[service]
    before = witness_state(fleet)
    send_headers = {"Content-Type": "application/json", **head}
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            request = client.build_request(
                method,
                base + path,
                content=body if method != "GET" else None,
                headers=send_headers,
                params=query,
            )
            reply = client.send(request, stream=True)
            try:
                data = b"".join(reply.iter_bytes())
            finally:
                reply.close()
    except httpx.TimeoutException as exc:
        raise AssertionError(f"{service} {method} {path}: no answer within {TIMEOUT} s") from exc
    except httpx.RemoteProtocolError:
        data = None  # the service dropped a request it could not frame; it must still serve (below)
        reply = None
    if reply is not None and data is not None:
        content_type = reply.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            assert reply.status_code < 500
            check_stream(template, data)
        else:
            check_answer(
                template.replace("{id}", "x"), reply.status_code, content_type, data, service == "engine"
            )
    with httpx.Client(timeout=5.0) as client:
        assert client.get(base + "/health").status_code == 200, f"{service} stopped serving"
    assert witness_state(fleet) == before, f"{service} {method} {path} changed another program's state"


@pytest.mark.parametrize("target", TARGETS, ids=[f"{s}:{m}:{p}" for s, m, p in TARGETS])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
@given(body=raw_bodies(), head=headers, query=queries, rid=ids)
@example(body=b'{"messages": ' + b"[" * 50000 + b"]" * 50000 + b"}", head={}, query={}, rid="x")
@example(body=b"{}", head={"X-Program-Id": "p" * 9000}, query={}, rid="x")
@example(body=b'{"model":"sim-llama","messages":[{"role":"user"}]}', head={}, query={}, rid="x")
@example(body=b'{"model":"sim-llama","prompt":[-1, 99999999]}', head={}, query={}, rid="x")
@example(body=b'{"model":"sim-llama","messages":[],"tools":"x","stop":5}', head={}, query={}, rid="x")
@example(body=b'{"model":"sim-llama","messages":[]}', head={"Content-Encoding": "gzip"}, query={}, rid="x")
@example(body=b'{"model":"sim-llama"}', head={}, query={}, rid="x")  # Messages: vLLM's OpenAI-shaped 400
def test_any_request_is_answered_in_the_routes_shape(
    fleet: Fleet,
    target: tuple[str, str, str],
    body: bytes,
    head: dict[str, str],
    query: dict[str, str],
    rid: str,
) -> None:
    _request(fleet, target, body, head, query, rid)
