"""The limits of a request's head, and the errors aiohttp raises itself, answered in the service's JSON.

Theory of operation
-------------------
aiohttp parses the request line and headers before any of our code runs. When that fails (a header
line over its limit, too many headers, an invalid method, a chunked body whose framing is broken) it
answers by itself, with a plain-text 400 that repeats the start of the offending line. Every client of
ours speaks JSON (OpenAI's SDK raises ``APIStatusError`` with the body as its message), and the line it
repeats may be an ``Authorization`` header. So every service runs with:

1. Limits (:class:`HttpLimits`): a header line of at most 32 KiB (what large deployments allow for
   JWTs and cookies: Envoy's default is 60 KiB for the whole head, nginx's ``large_client_header_buffers``
   8 KiB a line, aiohttp's own 8 KiB), at most 256 headers (aiohttp's default is 128; vLLM's server took
   200 in our tests), a request line of at most 32 KiB. Our own headers have much smaller limits of
   their own, checked by the services with a 400 in the route's shape: ``X-Program-Id`` and
   ``X-Thread-Id`` at most 256 printable characters (proxy/identity.py), ``X-Autellix-*`` (protocol.py).
2. Answers: a request whose head breaks a limit gets 431 (headers) or 414 (request line), any other
   malformed request 400, an error that escaped every middleware 500, all as the JSON the service's
   ``error_body(status, message)`` builds (Anthropic's shape on the Messages routes, whatever the
   service), never echoing the request. The connection is closed after
   such an answer, as aiohttp does (the stream is no longer trustworthy).
3. Logging: a malformed request is the client's problem and is logged at debug level, in one line;
   only a 500 is logged with its traceback.

How: :class:`JsonErrorRunner` is an ``AppRunner`` whose server hands connections to a
``RequestHandler`` subclass with its own ``handle_error`` (aiohttp's one place that builds these
answers). That is a subclass of an aiohttp class, not a patch; tests/unit/test_http_limits.py pins the
behaviour on a real socket, so an aiohttp upgrade that moves the hook fails there first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from autellix.api_errors import anthropic_body, error_shape_of

ErrorBody = Callable[[int, str], dict[str, Any]]

log = logging.getLogger("autellix.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Rule 1: what a request's head may hold."""

    max_line_size: int = 32 * 1024
    max_field_size: int = 32 * 1024
    max_headers: int = 256


def default_error_body(status: int, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def protocol_error(status: int, exc: BaseException | None, limits: HttpLimits) -> tuple[int, str]:
    """Rule 2: the status and message for what aiohttp reported (the request is never echoed)."""
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytes | bytearray) and line[:1] == b"/":
            return 414, f"The request line is longer than {limits.max_line_size} bytes."
        return 431, f"A request header is longer than {limits.max_field_size} bytes."
    if isinstance(exc, BadHttpMessage):
        if "Too many headers" in str(exc.message):
            return 431, f"The request has more than {limits.max_headers} headers."
        return 400, f"Malformed HTTP request: {type(exc).__name__}."
    if status == 504:
        return 504, "The request timed out."
    if status >= 500:
        return 500, "Internal server error."
    return status, "Malformed HTTP request."


class _JsonErrorHandler(web_protocol.RequestHandler):
    __slots__ = ("_head_path",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_path = ""

    def data_received(self, data: bytes) -> None:
        # When any message in a chunk fails to parse, aiohttp answers for the whole chunk with a
        # stand-in request whose path is "/" (a valid request ahead of the broken one included), so the
        # route's shape would be lost: remember the path of the request line a chunk starts with.
        if data[:1].isalpha():
            parts = data.split(b" ", 2)
            if len(parts) == 3 and parts[1][:1] == b"/":
                self._head_path = parts[1].split(b"?", 1)[0].decode("latin-1")
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        server = self._manager
        assert isinstance(server, _JsonErrorServer)
        if request.writer.output_size > 0:  # part of a reply went out already: only closing is left
            raise ConnectionError("the response is under way; cannot send an error")
        answer, text = protocol_error(status, exc, server.limits)
        if answer >= 500:
            log.error("error handling %s %s", request.method, request.path, exc_info=exc)
        else:
            log.debug("malformed request from %s: %s", request.remote, type(exc).__name__)
        try:
            path = request.path
            if path == "/" and self._head_path:  # aiohttp's stand-in for a chunk that did not parse
                path = self._head_path
            anthropic = error_shape_of(path) == "anthropic"
        except Exception:  # a request line too broken to have a path
            anthropic = False
        body = anthropic_body(answer, text) if anthropic else server.error_body(answer, text)
        response = web.json_response(body, status=answer)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """The app's low-level server, with our handler class and what it needs (rule 2)."""

    error_body: ErrorBody
    limits: HttpLimits

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose protocol errors are JSON (rule 2) under the given limits (rule 1)."""

    def __init__(
        self,
        app: web.Application,
        *,
        error_body: ErrorBody = default_error_body,
        limits: HttpLimits | None = None,
        **kwargs: Any,
    ) -> None:
        self._limits = limits or HttpLimits()
        self._error_body = error_body
        super().__init__(
            app,
            max_line_size=self._limits.max_line_size,
            max_field_size=self._limits.max_field_size,
            max_headers=self._limits.max_headers,
            **kwargs,
        )

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app built a plain Server (app startup ran in there); give it our handler class. Server
        # keeps no per-class state, so the instance is the same object with one method more.
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.error_body = self._error_body
        server.limits = self._limits
        return server


__all__ = ["ErrorBody", "HttpLimits", "JsonErrorRunner", "default_error_body", "protocol_error"]
