"""Per-call deadlines and queue-full answers, shared by the proxy and the sidecar (pure code).

Theory of operation
-------------------
A production proxy bounds both how long a call may take and how many calls may wait: without a
deadline a stuck engine holds a client and a queue slot for ever; without a bound a burst grows the
queue (and every wait in it) without limit. The rules follow Envoy's per-request timeout header and
the gateways in this field (SGLang's model gateway answers a full admission queue with a back-off
signal and ``Retry-After``; LiteLLM bounds every call by a request timeout).

1. Deadline. A client may send ``X-Request-Timeout: <seconds>`` (a positive decimal number, at most
   :data:`MAX_HEADER_CHARS` characters). The service's ``--max-call-seconds`` is both the default
   (a call without the header gets it) and the cap (a longer value is cut to it); 0 turns both off, and
   then only the client's header sets a deadline. A value that is not a positive finite number is a
   400 naming the header: a client that asks for a deadline must get the one it asked for or an error.
2. What the deadline does. A call still waiting when it passes (in the sidecar's queue, or in the proxy
   before the backend's first byte) is answered **504** (code ``deadline_exceeded``): the client's own
   time limit ran out while the gateway waited for its upstream, what 504 means and what Envoy answers;
   not 408 (the client was slow to *send*, which SGLang's gateway moved away from because proxies retry
   a 408 at once). A call already streaming is cut: its stream ends with the API's error event, and
   the engine request is closed (which aborts it). A whole reply still being read is a 504.
3. Propagation. The proxy forwards the time that is *left* in the same header, so the sidecar's queue
   drops a call whose client has gone past its deadline instead of admitting it.
4. Queue full. A bound passed is a **429** with ``Retry-After`` (whole seconds, at least 1, RFC 9110
   §10.2.3) in the route's API shape (OpenAI's ``rate_limit_exceeded``; Anthropic's
   ``rate_limit_error`` on the Messages routes), and the call is never queued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from autellix.api_errors import ApiError

DEADLINE_HEADER = "X-Request-Timeout"
MAX_HEADER_CHARS = 32


class DeadlineError(ValueError):
    """Rule 1: the header is not a positive finite number of seconds."""


def call_timeout(headers: Mapping[str, str], max_call_seconds: float) -> float | None:
    """Rule 1: the seconds this call may take (None: no deadline)."""
    cap = max_call_seconds if max_call_seconds > 0 else None
    raw = headers.get(DEADLINE_HEADER)
    if raw is None:
        return cap
    text = raw.strip()
    if not text or len(text) > MAX_HEADER_CHARS:
        raise DeadlineError(f"{DEADLINE_HEADER} must be a number of seconds (got {len(raw)} characters)")
    try:
        seconds = float(text)
    except ValueError:
        raise DeadlineError(f"{DEADLINE_HEADER} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise DeadlineError(f"{DEADLINE_HEADER} must be a positive number of seconds, got {text!r}")
    return seconds if cap is None else min(seconds, cap)


def header_value(remaining: float) -> str:
    """Rule 3: the time left, as the next hop reads it (never 0: a call sent on has a moment left)."""
    return f"{max(remaining, 0.001):.3f}"


def retry_after(seconds: float) -> str:
    """Rule 4: ``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def deadline_exceeded(seconds: float, where: str) -> ApiError:
    """Rule 2: the 504 of a call whose deadline passed ``where`` (a phrase: "in the queue")."""
    return ApiError(
        504,
        f"The call's deadline ({seconds:g} s, {DEADLINE_HEADER} or --max-call-seconds) passed {where}",
        code="deadline_exceeded",
    )


def queue_full(message: str, retry_after_seconds: float, *, error_type: str | None = None) -> ApiError:
    """Rule 4: a 429 with ``Retry-After``."""
    return ApiError(
        429,
        message,
        code="rate_limit_exceeded",
        headers={"Retry-After": retry_after(retry_after_seconds)},
        error_type=error_type,
    )
