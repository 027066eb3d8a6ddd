"""aiohttp's own answers (malformed requests, heads over the limits) are JSON (http_limits.py).

A real socket, because these answers are made below the app, by aiohttp's protocol handler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from autellix.http_limits import HttpLimits, JsonErrorRunner
from autellix.launch import free_port

LIMITS = HttpLimits(max_line_size=2048, max_field_size=1024, max_headers=16)


def body_of(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": status, "mine": True}}


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug that escaped every middleware")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    runner = JsonErrorRunner(app, error_body=body_of, limits=LIMITS)
    await runner.setup()
    chosen = free_port()
    await web.TCPSite(runner, "127.0.0.1", chosen).start()
    yield chosen
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)  # the connection is closed after an error
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


SECRET = b"Bearer sk-never-echo-me-" + b"x" * 2000


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /ok?" + b"a" * 4000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET /ok HTTP/1.1\r\nHost: a\r\nAuthorization: " + SECRET + b"\r\n\r\n", 431),
        (b"GET /ok HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n", 431),
        (b"G@T /ok HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /broken HTTP/1.1\r\nHost: a\r\n\r\n", 500),
    ],
    ids=["long-request-line", "long-header", "too-many-headers", "bad-method", "ambiguous-length", "bug"],
)
async def test_protocol_errors_are_the_services_json_and_never_echo_the_request(
    port: int, raw: bytes, status: int
) -> None:
    got, headers, body = await exchange(port, raw)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["mine"] is True and error["code"] == status
    assert b"never-echo" not in body and b"aaaa" not in body


async def test_heads_within_the_limits_pass_and_the_server_keeps_serving(port: int) -> None:
    await exchange(port, b"G@T /ok HTTP/1.1\r\nHost: a\r\n\r\n")
    raw = b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Long: " + b"v" * 1000 + b"\r\n\r\n"
    status, _, body = await exchange(port, raw)
    assert (status, json.loads(body)) == (200, {"ok": True})
