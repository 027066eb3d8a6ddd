"""The wire protocol between the proxy and the sidecars (DESIGN.md §3). Pure code: encode and decode.

Theory of operation
-------------------
1. Proxy to sidecar: the call's priority context travels in request headers of our own prefix
   (``X-Autellix-*``): program id, thread id, call id, the program's attained service (PLAS sum) and
   critical path (ATLAS S) and accumulated wait at the call's arrival, the proxy's arrival timestamp and
   its estimate of the call's input tokens. The JSON body is forwarded unchanged except for the fields an
   engine adapter must set (e.g. ``priority``).
2. Sidecar to proxy: when a call ends, the sidecar reports what it measured — queue wait, execution time,
   prompt, cached and output tokens, and whether the call ended normally. Non-streaming replies carry it in
   the ``X-Autellix-Report`` response header; streaming replies carry it as one SSE *comment* line
   (``: autellix-report {json}``) written just before the stream ends. SSE clients ignore comment lines
   anyway, and the proxy strips the line and the header so clients never see them.
3. Every header value is validated on decode; a malformed value raises :class:`ProtocolError`, which the
   receiving shell turns into a 400 (from a client) or a logged, ignored report (from an upstream).
4. Times are seconds (floats); timestamps are Unix epoch seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

HEADER_PREFIX = "X-Autellix-"
PROGRAM_ID = "X-Autellix-Program-Id"
THREAD_ID = "X-Autellix-Thread-Id"
CALL_ID = "X-Autellix-Call-Id"
PROGRAM_SERVICE = "X-Autellix-Program-Service"
PROGRAM_CRITICAL_PATH = "X-Autellix-Program-Critical-Path"
PROGRAM_WAIT = "X-Autellix-Program-Wait"
ARRIVAL = "X-Autellix-Arrival"
INPUT_TOKENS = "X-Autellix-Input-Tokens"
REPORT_HEADER = "X-Autellix-Report"
REPORT_SSE_PREFIX = b": autellix-report "

MAX_ID_LENGTH = 256  # an id a client names
# what the proxy sends: a client's id under its tenant's namespace (proxy/tenants.py rule 2)
MAX_WIRE_ID_LENGTH = MAX_ID_LENGTH + 64


class ProtocolError(ValueError):
    """A header or report that does not follow the protocol."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """A call's priority context, as the proxy hands it to a sidecar."""

    program_id: str
    call_id: str
    thread_id: str | None = None
    program_service: float = 0.0  # PLAS: sum of the program's completed calls' execution times (s)
    program_critical_path: float = 0.0  # ATLAS: the program's longest observed critical path S (s)
    program_wait: float = 0.0  # the program's accumulated queue wait (s)
    arrival: float = 0.0  # proxy arrival timestamp (Unix s)
    input_tokens: int = 0  # the proxy's estimate of the prompt length

    def headers(self) -> dict[str, str]:
        out = {
            PROGRAM_ID: self.program_id,
            CALL_ID: self.call_id,
            PROGRAM_SERVICE: repr(float(self.program_service)),
            PROGRAM_CRITICAL_PATH: repr(float(self.program_critical_path)),
            PROGRAM_WAIT: repr(float(self.program_wait)),
            ARRIVAL: repr(float(self.arrival)),
            INPUT_TOKENS: str(int(self.input_tokens)),
        }
        if self.thread_id is not None:
            out[THREAD_ID] = self.thread_id
        return out


def _identifier(headers: Mapping[str, str], name: str, required: bool) -> str | None:
    value = headers.get(name)
    if value is None or value == "":
        if required:
            raise ProtocolError(f"header {name} is required")
        return None
    if len(value) > MAX_WIRE_ID_LENGTH or not value.isprintable():
        raise ProtocolError(f"header {name} must be printable and at most {MAX_WIRE_ID_LENGTH} characters")
    return value


def _number(headers: Mapping[str, str], name: str, default: float = 0.0) -> float:
    raw = headers.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError(f"header {name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(f"header {name} must be a finite non-negative number, got {raw[:40]!r}")
    return value


def decode_call_context(headers: Mapping[str, str], default_call_id: str, now: float) -> CallContext:
    """Read a call's context from request headers; a call with no program id is a program of its own."""
    call_id = _identifier(headers, CALL_ID, required=False) or default_call_id
    program_id = _identifier(headers, PROGRAM_ID, required=False) or f"call-{call_id}"
    return CallContext(
        program_id=program_id,
        call_id=call_id,
        thread_id=_identifier(headers, THREAD_ID, required=False),
        program_service=_number(headers, PROGRAM_SERVICE),
        program_critical_path=_number(headers, PROGRAM_CRITICAL_PATH),
        program_wait=_number(headers, PROGRAM_WAIT),
        arrival=_number(headers, ARRIVAL, default=now),
        input_tokens=int(_number(headers, INPUT_TOKENS)),
    )


@dataclass(frozen=True, slots=True)
class CompletionReport:
    """What a sidecar measured for one call, sent back to the proxy when the call ends."""

    call_id: str
    queue_wait: float  # seconds in the sidecar's queue plus the engine's own queue time where known
    exec_time: float  # seconds from admission to completion, minus engine queue time where known
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    ok: bool = True  # False: aborted or failed; the measured time still counts as service
    # the sidecar's working set when the call ended: resident programs' KV / the cache (None: no gate
    # or cache size unknown); the residency router spreads new programs by it
    resident: float | None = None

    def to_json(self) -> str:
        # Built by hand: dataclasses.asdict deep-copies and costs ~30 µs on the per-call hot path.
        fields = {
            "call_id": self.call_id,
            "queue_wait": self.queue_wait,
            "exec_time": self.exec_time,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "ok": self.ok,
        }
        if self.resident is not None:
            fields["resident"] = self.resident
        return json.dumps(fields, separators=(",", ":"))

    def sse_line(self) -> bytes:
        return REPORT_SSE_PREFIX + self.to_json().encode() + b"\n\n"


def decode_report(raw: str | bytes) -> CompletionReport:
    """Parse a report from the header value or the SSE comment payload."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"completion report is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("completion report must be a JSON object")
    try:
        report = CompletionReport(
            call_id=str(data["call_id"]),
            queue_wait=float(data["queue_wait"]),
            exec_time=float(data["exec_time"]),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            ok=bool(data.get("ok", True)),
            resident=None if data.get("resident") is None else float(data["resident"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"completion report is missing or has a bad field: {exc}") from exc
    if not (math.isfinite(report.queue_wait) and math.isfinite(report.exec_time)):
        raise ProtocolError("completion report times must be finite")
    if report.queue_wait < 0 or report.exec_time < 0:
        raise ProtocolError("completion report times must be non-negative")
    if report.resident is not None and not (math.isfinite(report.resident) and report.resident >= 0):
        raise ProtocolError("completion report resident share must be a finite number >= 0")
    return report


def strip_internal_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers without ours (any ``X-Autellix-*``), for what a client or an engine may see."""
    return {k: v for k, v in headers.items() if not k.lower().startswith(HEADER_PREFIX.lower())}
