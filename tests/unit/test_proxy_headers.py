"""Headers across the proxy: ours never reach clients, a client's never reach the engine (headers.py)."""

from __future__ import annotations

from autellix.engine_adapters.protocol import CallContext
from autellix.proxy.headers import client_headers, upstream_headers


def test_upstream_headers_drop_forged_context_and_hop_by_hop() -> None:
    client = [
        ("Host", "proxy"),
        ("Content-Length", "10"),
        ("Connection", "keep-alive"),
        ("Accept-Encoding", "gzip"),
        ("Authorization", "Bearer k"),
        ("X-Autellix-Program-Service", "0"),
        ("x-autellix-call-id", "forged"),
        ("X-Program-Id", "p"),
    ]
    out = upstream_headers(client, CallContext("p", "c1", program_service=3.5))
    assert out["Authorization"] == "Bearer k" and out["X-Program-Id"] == "p"
    assert out["Accept-Encoding"] == "identity"
    assert out["X-Autellix-Call-Id"] == "c1" and out["X-Autellix-Program-Service"] == "3.5"
    assert len(out.getall("X-Autellix-Call-Id")) == 1
    assert "Host" not in out and "Content-Length" not in out and "Connection" not in out


def test_client_headers_drop_ours_and_framing() -> None:
    upstream = [
        ("Content-Type", "text/event-stream"),
        ("Transfer-Encoding", "chunked"),
        ("X-Autellix-Report", "{}"),
        ("Server", "engine"),
        ("Date", "x"),
        ("X-Request-Id", "r"),
    ]
    assert dict(client_headers(upstream)) == {"Content-Type": "text/event-stream", "X-Request-Id": "r"}
