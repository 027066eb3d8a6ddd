"""The sidecar's HTTP client to its engine (IO only): one pooled aiohttp session, one retry rule.

1. Connections are pooled and unlimited in number (the admission window is the limit, not the pool);
   aiohttp sets TCP_NODELAY, so streamed chunks are not held back by Nagle's algorithm.
2. A request that fails because a *pooled* connection was closed by the engine before it answered
   (``ServerDisconnectedError``, a reset on write) is sent once more on a fresh connection: it never
   reached the engine (reference.md §6 saw vLLM close idle pooled connections under load).
3. A refused or timed-out connect means the engine is down: :class:`EngineUnavailable`.
4. No total timeout: a call may legitimately generate for minutes; the client's disconnect (handler
   cancellation) is what ends a call early, and closing the response aborts it in the engine.
5. With an engine key, every request (calls, load probes, server info, health) carries
   ``Authorization: Bearer <key>`` in place of any the caller sent: vLLM with ``--api-key`` guards only
   ``/v1/*``, but sending the key everywhere costs nothing and fits engines that guard more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from autellix.engine_adapters.protocol import HEADER_PREFIX

_NOT_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "accept-encoding",
        "expect",
    }
)


class EngineUnavailable(Exception):
    """The engine could not be reached (refused, unreachable, timed out connecting, or vanished)."""


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers an engine may see: no hop-by-hop headers, none of ours."""
    prefix = HEADER_PREFIX.lower()
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in _NOT_FORWARDED and not name.lower().startswith(prefix)
    }


class EngineClient:
    """Requests to one engine at ``base_url``."""

    def __init__(self, base_url: str, connect_timeout: float = 5.0, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._connect_timeout = connect_timeout
        self._authorization = f"Bearer {api_key}" if api_key else None
        self._session: aiohttp.ClientSession | None = None

    def with_credential(self, headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """Rule 5: ``headers`` with the engine key in place of the caller's ``Authorization``."""
        if self._authorization is None:
            return headers
        out = {name: value for name, value in (headers or {}).items() if name.lower() != "authorization"}
        out["Authorization"] = self._authorization
        return out

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        # one session serves every caller: an engine's Set-Cookie must not ride on other callers' requests
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("EngineClient.start() was not awaited")
        return self._session

    async def request(
        self, method: str, path: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller must ``release()`` or ``close()`` the response (close aborts)."""
        url = self.base_url + path
        headers = self.with_credential(headers)
        for attempt in (1, 2):
            try:
                return await self.session.request(method, url, data=data, headers=headers)
            except aiohttp.ClientConnectorError as exc:
                raise EngineUnavailable(
                    f"cannot connect to the engine at {self.base_url}: {exc.os_error}"
                ) from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 2:
                    raise EngineUnavailable(
                        f"the engine at {self.base_url} closed the connection: {exc}"
                    ) from exc
            except TimeoutError as exc:
                raise EngineUnavailable(f"connecting to the engine at {self.base_url} timed out") from exc
        raise AssertionError("unreachable")

    async def get_text(self, path: str, timeout: float) -> tuple[int, str]:
        """``GET path`` with an overall ``timeout``; returns status and body text."""
        async with asyncio.timeout(timeout):
            response = await self.request("GET", path)
            try:
                return response.status, await response.text(errors="replace")
            finally:
                response.release()
