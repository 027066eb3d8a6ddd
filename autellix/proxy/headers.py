"""Which headers cross the proxy, in each direction (DESIGN.md §3: clients never see ours).

1. Upstream: the client's headers minus hop-by-hop ones and minus every ``X-Autellix-*`` header (a
   client must not forge a priority context), with ``Accept-Encoding: identity`` (the SSE report line
   must be findable in the bytes), plus the call's context from :class:`CallContext`.
2. Downstream: the upstream's reply headers minus hop-by-hop ones, ``Server``, ``Date`` (the proxy
   writes its own) and every ``X-Autellix-*`` header (the completion report among them).
3. Credentials (auth.py rule 6): when the proxy checks API keys, or sends a backend key, the app's
   middleware takes the client's ``Authorization`` off the request before rule 1 runs
   (:func:`without_authorization`); the backend key rides on the upstream session's default headers,
   so health checks and model lists carry it as well as calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

from autellix.engine_adapters.protocol import HEADER_PREFIX, CallContext

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_PREFIX = HEADER_PREFIX.lower()


def upstream_headers(headers: Iterable[tuple[str, str]], context: CallContext | None) -> CIMultiDict[str]:
    """Rule 1: the client's headers minus hop-by-hop and ours, plus the call's context (None: a request
    that is not a scheduled call, such as reading a stored response)."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower == "accept-encoding" or lower.startswith(_PREFIX):
            continue
        out.add(name, value)
    out["Accept-Encoding"] = "identity"  # the SSE report must be findable in the bytes
    if context is not None:
        out.update(context.headers())
    return out


def client_headers(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """What the client may see of the upstream's reply headers."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower.startswith(_PREFIX) or lower in ("server", "date"):
            continue
        out.add(name, value)
    return out


_CREDENTIALS = frozenset({"authorization", "x-api-key"})


def without_authorization(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Rule 3: the request's headers without the client's credential (every ``Authorization``, and
    ``x-api-key``, the header Anthropic's SDKs send on the Messages routes)."""
    return CIMultiDict((name, value) for name, value in headers if name.lower() not in _CREDENTIALS)
