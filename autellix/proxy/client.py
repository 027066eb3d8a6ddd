"""Client helper: run a block of code as one program, with the ordinary ``openai`` SDK.

Usage (sync)::

    from autellix.proxy.client import program

    with program("http://127.0.0.1:8080") as prog:          # POST /v1/programs
        client = prog.openai()                               # an openai.OpenAI bound to the program
        client.chat.completions.create(model="m", messages=[...])
        with prog.thread("search-1"):                        # calls in here carry X-Thread-Id
            client.chat.completions.create(...)
    # DELETE /v1/programs/{id}, also when the block raised

Usage (async, parallel threads)::

    async with async_program(url) as prog:
        client = prog.async_openai()

        async def branch(name: str) -> None:
            with prog.thread(name):                          # a contextvar: each task has its own
                await client.chat.completions.create(...)

        await asyncio.gather(branch("a"), branch("b"))

How the headers get there: the clients made by :meth:`Program.openai` / :meth:`Program.http_client`
(and their async twins) carry an httpx request hook that adds ``X-Program-Id`` and, inside
``prog.thread(...)``, ``X-Thread-Id``. A client of your own can use ``default_headers=prog.headers()``
(no threads) or ``extra_headers=prog.headers()`` per call. The thread lives in a :class:`ContextVar`:
asyncio tasks inherit it, so parallel branches each set their own; plain threads do not inherit it
(call ``prog.thread`` inside the worker, or run the worker in ``contextvars.copy_context()``).

API keys: a proxy started with ``--api-key`` wants ``Authorization: Bearer <key>`` on every call,
including ``POST/DELETE /v1/programs``. ``program(url, api_key=...)`` sends it there and makes it the
default key of the clients from :meth:`Program.openai`; without ``api_key`` the ``OPENAI_API_KEY``
environment variable is used, as the ``openai`` SDK itself does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
import httpx2
import openai as openai_sdk

from .identity import PROGRAM_HEADER, THREAD_HEADER

log = logging.getLogger("autellix.proxy.client")

# (program id, thread id) of the innermost ``Program.thread`` block of the current context
_CURRENT_THREAD: ContextVar[tuple[str, str] | None] = ContextVar("autellix_current_thread", default=None)


def _root(proxy_url: str) -> str:
    url = proxy_url.rstrip("/")
    return url.removesuffix("/v1")


class Program:
    """A started program: its id, the headers that name it, and threads."""

    def __init__(self, program_id: str, proxy_url: str, api_key: str | None = None) -> None:
        self.id = program_id
        self.proxy_url = _root(proxy_url)
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of the proxy (``.../v1``)."""
        return self.proxy_url + "/v1"

    def current_thread(self) -> str | None:
        current = _CURRENT_THREAD.get()
        return current[1] if current is not None and current[0] == self.id else None

    def headers(self, thread: str | None = None) -> dict[str, str]:
        out = {PROGRAM_HEADER: self.id}
        thread = thread if thread is not None else self.current_thread()
        if thread is not None:
            out[THREAD_HEADER] = thread
        return out

    @contextmanager
    def thread(self, name: str) -> Iterator[None]:
        """Calls made inside the block (in this context) belong to thread ``name``."""
        token = _CURRENT_THREAD.set((self.id, name))
        try:
            yield
        finally:
            _CURRENT_THREAD.reset(token)

    def _add_headers(self, request: httpx2.Request) -> None:
        request.headers.update(self.headers())

    async def _add_headers_async(self, request: httpx2.Request) -> None:
        request.headers.update(self.headers())

    def http_client(self, **kwargs: Any) -> httpx2.Client:
        """The openai SDK's own HTTP client (httpx2), naming the program and thread on every request."""
        hooks = kwargs.pop("event_hooks", {})
        hooks = {**hooks, "request": [*hooks.get("request", []), self._add_headers]}
        return openai_sdk.DefaultHttpxClient(event_hooks=hooks, **kwargs)

    def async_http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        hooks = kwargs.pop("event_hooks", {})
        hooks = {**hooks, "request": [*hooks.get("request", []), self._add_headers_async]}
        return openai_sdk.DefaultAsyncHttpxClient(event_hooks=hooks, **kwargs)

    def openai(self, **kwargs: Any) -> openai_sdk.OpenAI:
        kwargs.setdefault("base_url", self.base_url)
        kwargs.setdefault("api_key", self.api_key or "EMPTY")
        kwargs.setdefault("http_client", self.http_client())
        return openai_sdk.OpenAI(**kwargs)

    def async_openai(self, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
        kwargs.setdefault("base_url", self.base_url)
        kwargs.setdefault("api_key", self.api_key or "EMPTY")
        kwargs.setdefault("http_client", self.async_http_client())
        return openai_sdk.AsyncOpenAI(**kwargs)


def _start_body(program_id: str | None) -> dict[str, str]:
    return {"id": program_id} if program_id is not None else {}


def _auth_headers(api_key: str | None) -> tuple[str | None, dict[str, str]]:
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    return key, ({"Authorization": f"Bearer {key}"} if key else {})


def _program_id(reply: httpx.Response) -> str:
    reply.raise_for_status()
    program_id = reply.json()["id"]
    assert isinstance(program_id, str)
    return program_id


@contextmanager
def program(
    proxy_url: str, *, program_id: str | None = None, api_key: str | None = None, timeout: float = 10.0
) -> Iterator[Program]:
    """Start a program on the proxy, yield it, end it on exit (also on error)."""
    root = _root(proxy_url)
    key, headers = _auth_headers(api_key)
    with httpx.Client(timeout=timeout, headers=headers) as http:
        reply = http.post(root + "/v1/programs", json=_start_body(program_id))
        started = Program(_program_id(reply), root, key)
        try:
            yield started
        finally:
            try:
                http.delete(f"{root}/v1/programs/{started.id}")
            except httpx.HTTPError as exc:  # never hide the block's own exception behind this one
                log.warning("could not end program %s: %s", started.id, exc)


@asynccontextmanager
async def async_program(
    proxy_url: str, *, program_id: str | None = None, api_key: str | None = None, timeout: float = 10.0
) -> AsyncIterator[Program]:
    """The async twin of :func:`program`."""
    root = _root(proxy_url)
    key, headers = _auth_headers(api_key)
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:
        reply = await http.post(root + "/v1/programs", json=_start_body(program_id))
        started = Program(_program_id(reply), root, key)
        try:
            yield started
        finally:
            try:
                await http.delete(f"{root}/v1/programs/{started.id}")
            except httpx.HTTPError as exc:
                log.warning("could not end program %s: %s", started.id, exc)
