"""One ordered, pipelined connection to a standalone Redis: the program table's hot path.

Theory of operation
-------------------
redis-py's asyncio client costs the proxy several event-loop passes per command (a connection taken
from the pool, a task per batch, awaits around the write and the read). This link is a plain
:class:`asyncio.Protocol` over one socket, parsed with hiredis (a dependency of ``redis[hiredis]``):

1. Order. :meth:`RedisLink.send` appends the command to this turn's write buffer and its reply future
   to a FIFO, synchronously, before any await: Redis executes one connection's commands in the order
   they were written, so a command sent after another on this link is executed after it. The program
   table relies on this (a call's finish before the same replica's next start; a start given back by
   a finish queued behind it). Replies come back in the same order and resolve the FIFO's futures.
2. Batching. Commands sent in one loop turn leave in one write (flushed by a ``call_soon`` callback, or
   at once by ``flush=True``); a lone command still costs one round trip.
3. A cancelled reply future only stops its waiter: the command was written (rule 1) and is executed;
   its reply is read and dropped.
4. Failures. A connection lost (or never opened) fails every pending future, and every later
   :meth:`send` until :meth:`open` succeeds again, with :class:`redis.exceptions.ConnectionError`. A
   reply that takes longer than ``timeout`` seconds aborts the connection and fails every pending
   future with :class:`redis.exceptions.TimeoutError` (one timer per link, re-armed for the oldest
   pending command, not one per command). Error replies resolve their own future only (as
   :class:`~redis.exceptions.ResponseError`, or :class:`~redis.exceptions.NoScriptError` for
   ``NOSCRIPT``).
5. Connecting takes what redis-py would from the same URL: ``redis://``, ``rediss://`` (TLS with the
   default context) and ``unix://``, a username and password (``AUTH``) and a database (``SELECT``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Protocol(asyncio.Protocol):
    """Rules 1-4 on one transport."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outgoing: list[bytes] = []
        self.lost: BaseException | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, packed: bytes, flush: bool) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None:
            raise RedisConnectionError(f"Redis link closed: {self.lost or 'not connected'}")
        future: asyncio.Future[Any] = self._loop.create_future()
        self.pending.append((future, time.monotonic()))
        if not self.outgoing and not flush:
            self._loop.call_soon(self.flush)
        self.outgoing.append(packed)
        if flush:
            self.flush()
        if self._watchdog is None and self.timeout is not None:
            self._watchdog = self._loop.call_later(self.timeout, self._check)
        return future

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and self.lost is None:
            data = self.outgoing[0] if len(self.outgoing) == 1 else b"".join(self.outgoing)
            self.transport.write(data)
        self.outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self.pending
        while True:
            reply = self._reader.gets()
            if reply is False:
                break
            if not pending:  # a reply nobody asked for: the stream is out of step, stop using it
                self._fail(RedisConnectionError("Redis sent an unexpected reply"))
                return
            future, _sent = pending.popleft()
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                if str(reply).startswith("NOSCRIPT"):
                    reply = NoScriptError(str(reply))
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _check(self) -> None:
        self._watchdog = None
        if not self.pending or self.timeout is None or self.lost is not None:
            return
        overdue = self.pending[0][1] + self.timeout - time.monotonic()
        if overdue <= 0:
            self._fail(RedisTimeoutError(f"Redis did not answer within {self.timeout} s"))
        else:
            self._watchdog = self._loop.call_later(overdue, self._check)

    def _fail(self, error: BaseException, abort: bool = True) -> None:
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.outgoing.clear()
        while self.pending:
            future, _sent = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class RedisLink:
    """The ordered link of the module doc; ``open`` (again) after a failure."""

    def __init__(self, options: dict[str, Any], timeout: float | None = 1.0) -> None:
        self.options = options
        self.timeout = timeout
        self._protocol: _Protocol | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float | None = 1.0) -> RedisLink:
        return cls(dict(parse_url(url)), timeout)

    @classmethod
    def like(cls, client: Any) -> RedisLink:
        """A link to where a redis-py client connects (its pool's options and timeout)."""
        pool = client.connection_pool
        options = {**pool.connection_kwargs, "connection_class": pool.connection_class}
        return cls(options, options.get("socket_timeout"))

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.lost is None

    async def open(self) -> None:
        """(Re)connect, authenticate and select the database; raises a Redis error on failure."""
        self.close()
        loop = asyncio.get_running_loop()
        options = self.options
        try:
            async with asyncio.timeout(self.timeout):
                if "path" in options:
                    _t, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self.timeout), options["path"]
                    )
                else:
                    secure = options.get("connection_class") is SSLConnection
                    tls = ssl.create_default_context() if secure else None
                    _t, protocol = await loop.create_connection(
                        lambda: _Protocol(self.timeout),
                        options.get("host", "localhost"),
                        int(options.get("port", 6379)),
                        ssl=tls,
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._protocol = protocol
        password, username = options.get("password"), options.get("username")
        if password is not None:
            await self.call("AUTH", *([username] if username else []), password)
        if int(options.get("db", 0) or 0):
            await self.call("SELECT", int(options["db"]))
        await self.call("PING")

    def send(self, *command: Any, flush: bool = False) -> asyncio.Future[Any]:
        """Rule 1: write ``command`` (this turn, or now with ``flush``); the future of its reply."""
        if self._protocol is None:
            raise RedisConnectionError("Redis link not connected")
        return self._protocol.send(hiredis.pack_command(command), flush)

    async def call(self, *command: Any) -> Any:
        return await self.send(*command)

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.flush()
            self._protocol._fail(RedisConnectionError("Redis link closed"), abort=False)
            self._protocol = None
