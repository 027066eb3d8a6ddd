"""Request bodies that the standard JSON parser raises odd errors on are clean 400s (jsonbody.py)."""

from __future__ import annotations

import json

import pytest

from autellix.api_errors import ApiError
from autellix.jsonbody import MAX_DEPTH, JsonBodyError, nesting_exceeds, parse_json
from autellix.proxy.apis import parse_call_body


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (nested(50_000), "nests deeper"),  # RecursionError inside json.loads
        (b'{"x": ' + nested(MAX_DEPTH) + b"}", "nests deeper"),  # parses, but one level too many
        (b"9" * 5000, "4300 digits"),  # ValueError: Python's integer digit limit
        (b'{"a": "\xff"}', "not valid JSON"),  # not UTF-8
        (b"{", "not valid JSON"),
    ],
)
def test_bodies_that_break_the_parser_are_a_json_body_error(raw: bytes, why: str) -> None:
    with pytest.raises(JsonBodyError, match=why):
        parse_json(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (nested(MAX_DEPTH), None),
        (b"\xef\xbb\xbf{}", {}),  # a UTF-8 byte-order mark, as vLLM accepts it
        (b'{"a": 1, "a": 2}', {"a": 2}),  # duplicate keys: the last one wins
        (b"[" + b"{}," * 1000 + b"{}]", None),  # many brackets, little depth
    ],
)
def test_ordinary_bodies_parse(raw: bytes, value: object) -> None:
    parsed = parse_json(raw)
    if value is not None:
        assert parsed == value


def test_nan_and_infinity_are_left_to_the_field_checks() -> None:
    parsed = parse_json(b'{"t": NaN, "u": Infinity, "v": -Infinity}')
    assert parsed["t"] != parsed["t"] and parsed["u"] == float("inf") and parsed["v"] == float("-inf")


def test_the_depth_walk_is_iterative_and_exact() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(20_000):  # far past the recursion limit: a recursive walk would raise
        child: list[object] = []
        node.append(child)
        node = child
    assert nesting_exceeds(deep, MAX_DEPTH)
    assert not nesting_exceeds(json.loads(nested(10)), 10)
    assert nesting_exceeds(json.loads(nested(11)), 10)
    assert not nesting_exceeds(5, 0)


@pytest.mark.parametrize("raw", [b'{"messages": ' + nested(50_000) + b"}", nested(50_000), b"9" * 5000])
def test_the_proxy_answers_them_with_a_400_not_a_500(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_call_body("chat", raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
