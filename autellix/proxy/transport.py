"""The proxy's one seam to its backends: send a request, get a reply to read or stream (httpx-style).

Everything the proxy says to a backend (calls, health checks, model lists) goes through a
:class:`Transport`: one method, :meth:`Transport.send`, taking an :class:`UpstreamRequest` and returning
an :class:`UpstreamReply` whose body is read whole or chunk by chunk. Two drivers: :class:`AiohttpTransport`
(production: one pooled ``aiohttp.ClientSession``) and :class:`MockTransport` (a function answers, as
httpx's ``MockTransport`` does), so the call path's unit tests need no servers; the integration tests
run the real driver against real processes.

1. Failures are the transport's own exceptions, never the driver's: :class:`UpstreamUnavailable` before
   a reply (``kind`` ``"connect"`` or ``"timeout"``; ``unreachable`` when it speaks about the backend:
   refused, unreachable, connect timeout, but not this host's lack of sockets or ports, nor a pooled
   connection the backend closed, nor a slow reply), :class:`UpstreamBroken` while reading one.
2. A reply must be ``close()``\\ d (the connection is dropped: that is how a sidecar or an engine learns
   to abort the call) or ``release()``\\ d (read to its end: the connection may be reused).
3. Timeouts: a call has none overall (generation may take minutes), only the connect and per-read
   timeouts of the driver; a request may set ``timeout`` (health checks, model lists) for a total limit.
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
from multidict import CIMultiDict

# Connect errors of this host rather than of the backend: counting them against the backends would take
# every backend out of the pool at once.
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS, errno.ENOMEM})
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class TransportError(Exception):
    """Rule 1: something went wrong between the proxy and a backend."""


class UpstreamUnavailable(TransportError):
    """No reply: the request could not be sent, or no answer came within the timeouts."""

    def __init__(
        self, message: str, kind: Literal["connect", "timeout"], unreachable: bool, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.unreachable = unreachable
        self.reason = reason or message  # what a failed health observation records


class UpstreamBroken(TransportError):
    """A reply broke off while it was read (``timed_out``: a read timeout)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float | None = None  # rule 3: a total limit, for requests that are not calls


class UpstreamReply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive, repeated names kept (``items()`` gives every one)."""
        ...

    @property
    def content_type(self) -> str: ...

    async def read(self) -> bytes:
        """The whole body (raises :class:`UpstreamBroken`)."""
        ...

    async def readany(self) -> bytes:
        """The next bytes that arrived; ``b""`` at the end (raises :class:`UpstreamBroken`)."""
        ...

    def at_eof(self) -> bool: ...

    def close(self) -> None:
        """Drop the connection (the backend aborts the call)."""
        ...

    def release(self) -> None:
        """Give a fully read connection back to the pool."""
        ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        """Rule 1: raises :class:`UpstreamUnavailable` when no reply came."""
        ...


def backend_unreachable(exc: BaseException) -> bool:
    """A connect failure that speaks about the backend (refused, unreachable, connect timeout)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno not in _LOCAL_ERRNOS
    return False


class _AiohttpReply:
    """An ``aiohttp.ClientResponse`` behind :class:`UpstreamReply`."""

    __slots__ = ("_reply", "content_type", "headers", "status")

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self._reply = reply
        self.status = reply.status
        self.headers = reply.headers
        self.content_type = reply.content_type

    async def read(self) -> bytes:
        try:
            return await self._reply.read()
        except TimeoutError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}", timed_out=True) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def readany(self) -> bytes:
        try:
            return await self._reply.content.readany()
        except TimeoutError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}", timed_out=True) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    def at_eof(self) -> bool:
        return self._reply.content.at_eof()

    def close(self) -> None:
        self._reply.close()

    def release(self) -> None:
        self._reply.release()


class AiohttpTransport:
    """The production driver: one pooled session for every backend (rules 1-3)."""

    def __init__(self, session: aiohttp.ClientSession, connect_timeout: float, read_timeout: float) -> None:
        self.session = session
        self._call_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._connect_timeout = connect_timeout

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        timeout = (
            self._call_timeout if request.timeout is None else aiohttp.ClientTimeout(total=request.timeout)
        )
        try:
            reply = await self.session.request(
                request.method, request.url, data=request.body, headers=request.headers, timeout=timeout
            )
        except _CONNECT_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise UpstreamUnavailable(str(exc), "connect", backend_unreachable(exc), reason) from exc
        except TimeoutError as exc:
            reason = f"connect timeout ({self._connect_timeout} s)"
            raise UpstreamUnavailable("timed out", "timeout", backend_unreachable(exc), reason) from exc
        except (aiohttp.ClientError, OSError) as exc:  # e.g. a reply that is not HTTP: no answer either
            reason = f"{type(exc).__name__}: {exc}"
            raise UpstreamUnavailable(reason, "connect", False, reason) from exc
        return _AiohttpReply(reply)


# ----- the test driver ---------------------------------------------------------------------------------


class MockReply:
    """A reply made up by a :class:`MockTransport` handler: a whole body, or chunks that an async
    iterator yields (one ``readany`` each; an exception it raises breaks the reply off)."""

    def __init__(
        self,
        status: int = 200,
        body: bytes | AsyncIterator[bytes] = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        self.content_type = content_type.split(";")[0].strip().lower()
        self._body = body
        self._eof = isinstance(body, bytes) and not body
        self.closed = False
        self.released = False

    @classmethod
    def json(cls, payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> MockReply:
        head = {"Content-Type": "application/json", **(headers or {})}
        return cls(status, json.dumps(payload).encode(), head)

    @classmethod
    def sse(
        cls, chunks: AsyncIterator[bytes], status: int = 200, headers: Mapping[str, str] | None = None
    ) -> MockReply:
        return cls(status, chunks, {"Content-Type": "text/event-stream", **(headers or {})})

    async def read(self) -> bytes:
        if isinstance(self._body, bytes):
            self._eof = True
            return self._body
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def readany(self) -> bytes:
        if isinstance(self._body, bytes):
            data, self._body = self._body, b""
            self._eof = True
            return data
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            self._eof = True
            return b""
        except TransportError:
            raise
        except Exception as exc:  # the made-up backend died mid-reply
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    def at_eof(self) -> bool:
        return self._eof

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.released = True


Handler = Callable[[UpstreamRequest], Awaitable[MockReply]]


class MockTransport:
    """Answers every request with ``handler(request)``; raise :class:`UpstreamUnavailable` in it to act
    out a backend that cannot be reached. ``sent`` records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sent: list[UpstreamRequest] = []

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        self.sent.append(request)
        reply = await self.handler(request)
        return reply
