"""Relay of an engine's SSE stream to the client, with our report added (pure code: bytes in, bytes out).

Theory of operation (DESIGN.md §3, protocol.py rule 2)
-----------------------------------------------------
The engine's stream arrives in chunks split anywhere, even inside a line. The relay cuts it into SSE
events (an event ends at a blank line: ``\\n\\n`` or ``\\r\\n\\r\\n``) and passes every complete event on
at once, byte for byte; only an incomplete tail is held until its end arrives (a client cannot use
half an event anyway). Per event:

1. The stream's last event (chat and completions: ``data: [DONE]``; Responses: ``response.completed``
   and its kin; Messages: ``message_stop``; the API's dialect says, apis.py rule 3) ends the stream: it
   is held back, with anything after it, so that the shell can write the completion report (an SSE
   comment line, ignored by SSE clients and stripped by the proxy) just before it:
   :meth:`SseRelay.finish`. A last event that carries usage (``response.completed``) is read first.
2. A chunk that carries ``usage`` (only those that can are parsed: chat's mentioning ``"usage"``,
   Responses' last event, Messages' ``message_start`` and ``message_delta``, so the per-token hot
   path does no JSON work) updates the call's usage. If it is a usage-only chunk (empty ``choices``)
   and the client did not ask for usage itself, it is dropped: the sidecar asked the engine for usage
   to count tokens, and the client must see the stream it would have seen without us.
3. A chunk with a top-level ``error`` marks the call as failed (vLLM reports mid-stream errors so), as
   do Responses' ``error`` and ``response.failed`` events and Messages' ``error`` event.
4. Events that carry content (chat's ``choices``, ``response.output_text.delta``,
   ``content_block_delta``) are counted, as the output-token fallback (accounting.py).
5. If the stream ends without its last event (engine aborted, connection lost), :meth:`finish` flushes the
   held tail, closes it as an event and appends the report, so the proxy still learns what happened.
6. A resumable call (resume.py) gives a ``rewrite`` hook: every complete event passes through it
   first (it may change or drop it) and the rules above apply to what it returns. When such a call is
   stopped, :meth:`drop_partial` forgets the incomplete tail of the aborted stream (it was never
   forwarded, and its tokens are not counted as generated), and the resumed stream is fed on.

Feeding the same bytes in any split gives the same output bytes (the property the tests check).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from autellix.engine_adapters.accounting import Usage
from autellix.engine_adapters.apis import CHAT, StreamDialect

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_DONE = b"[DONE]"

UsageReader = Callable[[Mapping[str, Any]], "Usage | None"]
EventRewrite = Callable[[bytes], "bytes | None"]


def _name_of(event: bytes) -> bytes | None:
    """The ``event:`` name of one event, None if it has none (chat's and completions' events)."""
    if not event.startswith(b"event:") and b"\nevent:" not in event:
        return None
    for line in event.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip()
    return None


def data_of(event: bytes) -> bytes | None:
    """The joined ``data:`` payload of one event (without its terminator), None if it has none."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


class SseRelay:
    """Cuts an SSE byte stream into events, forwards them and collects what the report needs; the
    ``dialect`` (apis.py rule 3) says which event ends the stream and where usage and errors are."""

    def __init__(
        self,
        client_wants_usage: bool,
        read_usage: UsageReader,
        dialect: StreamDialect = CHAT.dialect,
        rewrite: EventRewrite | None = None,
    ) -> None:
        self._rewrite = rewrite
        self._strip_usage_chunk = not client_wants_usage and dialect.strips_usage_chunks
        self._read_usage = read_usage
        self._dialect = dialect
        self._buffer = b""
        self._held = b""  # the last event and whatever followed it
        self.done = False
        self.usage: Usage | None = None
        self.error_seen = False
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        """Take the next bytes from the engine; return the bytes to send to the client now."""
        if self.done:
            self._held += chunk
            return b""
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            end = match.end()
            event = buffer[start:end]
            start = end
            if self._rewrite is not None:
                rewritten = self._rewrite(event)
                if rewritten is None:
                    continue
                event = rewritten
            if self._keep(event):
                out.append(event)
            if self.done:
                self._held = event + buffer[start:]
                start = len(buffer)
                break
        self._buffer = buffer[start:]
        return b"".join(out)

    def drop_partial(self) -> None:
        """Rule 6: forget the incomplete tail of a stream that was stopped on purpose."""
        self._buffer = b""

    def finish(self, report_line: bytes) -> bytes:
        """The stream's end: held tail, then ``report_line``, then the held last event (if any)."""
        tail = self._buffer
        self._buffer = b""
        if tail:  # an unfinished event (never a complete one: feed() passed those on): close it
            tail += b"\n\n"
        held, self._held = self._held, b""
        return tail + report_line + held

    def _keep(self, event: bytes) -> bool:
        """Classify one complete event; False drops it (the held last event is not kept either)."""
        data = data_of(event)
        if data is None:
            return True
        dialect = self._dialect
        name = _name_of(event)
        end = dialect.is_end(name, data)
        if end and data.strip() == _DONE:
            self.done = True
            return False
        if not dialect.may_matter(name, data):
            if dialect.is_content(name, data):
                self.content_events += 1
            if end:  # held, to follow the report (rule 1)
                self.done = True
                return False
            return True
        try:
            payload = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return True
        if not isinstance(payload, dict):
            return True
        keep = True
        if dialect.is_error(name, payload):
            self.error_seen = True
            if dialect.strips_usage_chunks:
                return True
        shaped = dialect.usage(name, payload)
        usage = self._read_usage(shaped) if shaped is not None else None
        choices = payload.get("choices")
        if usage is not None:
            self.usage = usage
            if self._strip_usage_chunk and not choices:
                keep = False
        if choices or (not dialect.strips_usage_chunks and dialect.is_content(name, data)):
            self.content_events += 1
        if end:  # held, to follow the report (rule 1)
            self.done = True
            return False
        return keep
