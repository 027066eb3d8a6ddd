"""Program identity: which header or body field names the program and thread (identity.py rules 1-4)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from autellix.proxy.identity import SESSION_HEADERS, IdentityError, extract_identity


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("given", "metadata", "expected"),
    [
        ({"X-Program-Id": "p1"}, None, ("p1", "header:X-Program-Id")),
        ({"x-program-id": "p1"}, None, ("p1", "header:X-Program-Id")),  # case-insensitive
        ({"X-Program-Id": "p1", "X-Session-Id": "s"}, {"program_id": "b"}, ("p1", "header:X-Program-Id")),
        ({"X-Session-Id": "s"}, {"program_id": "b"}, ("b", "body:metadata.program_id")),
        ({"X-Session-Id": "s"}, None, ("s", "header:X-Session-Id")),
        ({"X-Claude-Code-Session-Id": "cc"}, None, ("cc", "header:X-Claude-Code-Session-Id")),
        ({"Session-Id": "codex"}, None, ("codex", "header:Session-Id")),
        ({"session_id": "old-codex"}, None, ("old-codex", "header:Session_Id")),
        ({"X-Opencode-Session": "oc"}, None, ("oc", "header:X-Opencode-Session")),
        ({"X-Session-Affinity": "aff"}, None, ("aff", "header:X-Session-Affinity")),
        ({}, {"session_id": "ms"}, ("ms", "body:metadata.session_id")),
        ({"X-Program-Id": ""}, {"program_id": ""}, (None, "none")),
        ({}, None, (None, "none")),
    ],
)
def test_the_program_id_comes_from_the_first_source_present(given, metadata, expected) -> None:
    identity = extract_identity(CIMultiDict(given), metadata)
    assert (identity.program_id, identity.source) == expected


def test_session_headers_are_tried_in_the_documented_order() -> None:
    every = CIMultiDict({name: name.lower() for name in SESSION_HEADERS})
    assert extract_identity(every, None).program_id == SESSION_HEADERS[0].lower()
    del every[SESSION_HEADERS[0]]
    assert extract_identity(every, None).program_id == SESSION_HEADERS[1].lower()


@pytest.mark.parametrize(
    ("given", "metadata", "thread"),
    [
        ({"X-Thread-Id": "t1"}, {"thread_id": "t2"}, "t1"),
        ({}, {"thread_id": "t2"}, "t2"),
        ({}, None, None),
    ],
)
def test_thread_from_header_then_metadata(given, metadata, thread) -> None:
    assert extract_identity(CIMultiDict(given), metadata).thread_id == thread


@pytest.mark.parametrize(
    ("given", "metadata", "param"),
    [
        ({"X-Program-Id": "x" * 257}, None, "X-Program-Id"),
        ({"X-Program-Id": "bad\x01id"}, None, "X-Program-Id"),
        ({"X-Program-Id": "bad\udcffid"}, None, "X-Program-Id"),  # undecodable byte (surrogateescape)
        ({"X-Thread-Id": "t\n"}, None, "X-Thread-Id"),
        ({"X-Session-Id": "s\x7f"}, None, "X-Session-Id"),
        ({}, {"program_id": 12}, "metadata.program_id"),
        ({}, {"program_id": "p\x00"}, "metadata.program_id"),
    ],
)
def test_invalid_ids_are_errors_naming_their_source(given, metadata, param) -> None:
    with pytest.raises(IdentityError) as caught:
        extract_identity(CIMultiDict(given), metadata)
    assert caught.value.param == param


def test_a_bad_first_source_is_not_skipped_for_a_later_one() -> None:
    with pytest.raises(IdentityError):
        extract_identity(CIMultiDict({"X-Program-Id": "x" * 300, "X-Session-Id": "fine"}), None)


def test_the_longest_valid_id_is_accepted() -> None:
    assert extract_identity(CIMultiDict({"X-Program-Id": "é" * 256}), None).program_id == "é" * 256
