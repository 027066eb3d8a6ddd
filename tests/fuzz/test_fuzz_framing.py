"""Bodies that arrive badly: chunked, truncated, slowly, or not at all (the client leaves mid-request or
mid-stream). Raw sockets, since an HTTP client library will not send these; the services must answer
in their API's shape or drop the connection, and keep serving with the witness program untouched."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import EXAMPLES, Fleet, witness_state
from tests.fuzz.properties import TIMEOUT, check_answer

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

SERVICES = ("proxy", "sidecar", "engine")
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
CALL = (
    b'{"model":"sim-llama","messages":[{"role":"user","content":"hi"}],'
    b'"prompt":"hi","input":"hi","max_tokens":3}'
)


def _address(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    assert parsed.port is not None
    return parsed.host, parsed.port


def _read_reply(sock: socket.socket) -> bytes:
    sock.settimeout(TIMEOUT)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError as exc:
        if not data:
            raise AssertionError(f"no answer within {TIMEOUT} s") from exc
    except ConnectionResetError:
        pass
    return data


def _check_raw(path: str, data: bytes, vllm_words: bool) -> None:
    if not data:
        return  # dropped: allowed for a request that could not be framed
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    content_type = ""
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-type":
            content_type = value.strip()
        if name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked or content_type.startswith("text/event-stream"):
        assert status < 500, data[:300]
        return
    check_answer(path, status, content_type, body, vllm_words)


def _after(fleet: Fleet, service: str, before: dict[str, object]) -> None:
    with httpx.Client(timeout=5.0) as client:
        assert client.get(fleet.urls()[service] + "/health").status_code == 200, f"{service} stopped serving"
    assert witness_state(fleet) == before


def _head(path: str, host: str, extra: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}".encode()


@pytest.mark.parametrize("service", SERVICES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    mode=st.sampled_from(["chunked", "bad_chunked", "truncated", "short_length", "slow", "leave"]),
    cut=st.integers(min_value=0, max_value=len(CALL)),
)
# scripts/fuzz.sh found these: a broken message in the packet of a valid head made aiohttp answer for
# both with a stand-in request ("/"), in OpenAI's shape on the Messages routes (http_limits.py)
@example(path="/v1/messages", mode="short_length", cut=0)
@example(path="/v1/messages", mode="bad_chunked", cut=7)
def test_badly_framed_bodies(fleet: Fleet, service: str, path: str, mode: str, cut: int) -> None:
    before = witness_state(fleet)
    host, port = _address(fleet.urls()[service])
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        if mode == "chunked":
            parts = [CALL[:cut], CALL[cut:]]
            body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts if p) + b"0\r\n\r\n"
            sock.sendall(_head(path, host, "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + body)
        elif mode == "bad_chunked":
            body = b"zz\r\n" + CALL[:cut] + b"\r\n0\r\n\r\n"
            sock.sendall(_head(path, host, "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + body)
        elif mode == "truncated":  # promises more than it sends, then stops sending
            sock.sendall(_head(path, host, f"Content-Length: {len(CALL) + 10}\r\n\r\n") + CALL[:cut])
            sock.shutdown(socket.SHUT_WR)
        elif mode == "short_length":  # the length cuts the JSON short; the rest is a second "request"
            sock.sendall(_head(path, host, f"Content-Length: {cut}\r\nConnection: close\r\n\r\n") + CALL)
        elif mode == "slow":
            sock.sendall(_head(path, host, f"Content-Length: {len(CALL)}\r\nConnection: close\r\n\r\n"))
            for i in range(0, len(CALL), 16):
                sock.sendall(CALL[i : i + 16])
                time.sleep(0.01)
        else:  # leaves mid-request
            sock.sendall(_head(path, host, f"Content-Length: {len(CALL)}\r\n\r\n") + CALL[:cut])
            sock.close()
            _after(fleet, service, before)
            return
        lenient = service == "engine"  # it answers as vLLM does: either shape (check_answer)
        _check_raw(path, _read_reply(sock), lenient)
    _after(fleet, service, before)


@pytest.mark.parametrize("service", SERVICES)
@settings(
    max_examples=max(3, EXAMPLES // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(PATHS), read=st.integers(min_value=0, max_value=400))
def test_a_client_that_leaves_mid_stream_changes_nothing_else(
    fleet: Fleet, service: str, path: str, read: int
) -> None:
    before = witness_state(fleet)
    host, port = _address(fleet.urls()[service])
    body = CALL[:-1] + b',"max_tokens":40,"ignore_eos":true,"stream":true}'
    body = body.replace(b'"max_tokens":3,', b"")
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(_head(path, host, f"Content-Length: {len(body)}\r\n\r\n") + body)
        got = b""
        while len(got) < read:
            chunk = sock.recv(read - len(got))
            if not chunk:
                break
            got += chunk
    _after(fleet, service, before)
