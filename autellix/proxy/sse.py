"""Strip the sidecar's completion report from an SSE byte stream, without buffering, and see where the
stream ends (pure code).

Theory of operation (DESIGN.md §3; engine_adapters/protocol.py rule 2)
--------------------------------------------------------------------
A sidecar ends every streamed reply with one SSE comment line, ``: autellix-report {json}``, followed
by a blank line, written just before ``data: [DONE]``. The proxy must hand the client the engine's
stream byte for byte without that line, and must learn the report before the client sees what follows
it (so that the program table is updated before the client can send the program's next call).

1. Bytes pass through in the chunks they came in. The only bytes ever held back are a line's start
   while it could still turn out to be the report marker (at most ``len(REPORT_SSE_PREFIX) - 1``
   bytes, and only when the line starts with ``:``), so every ``data:`` chunk leaves at once.
2. A line that starts with the marker is removed up to and including its line end, together with
   the one blank line after it (``\\n`` or ``\\r\\n``), which is exactly what the sidecar added.
3. :meth:`ReportStripper.feed` returns segments in stream order: ``bytes`` to send and
   :class:`ReportLine` markers where a report was; the shell acts on a marker before sending the
   bytes after it. Feeding the same stream split anywhere yields the same bytes and reports.
4. :meth:`ReportStripper.close` flushes a held line start at the end of the stream; a report cut off
   by the end of the stream is still returned (its JSON will usually not decode, and is then ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from autellix.engine_adapters.protocol import REPORT_SSE_PREFIX

MARKER = REPORT_SSE_PREFIX


@dataclass(frozen=True, slots=True)
class ReportLine:
    payload: bytes  # the JSON after the marker, without the line end


Segment = bytes | ReportLine


class _Mode(Enum):
    NORMAL = 0
    IN_REPORT = 1
    AFTER_REPORT = 2


class ReportStripper:
    """Feed upstream SSE bytes, get client bytes and report markers (see the module doc)."""

    def __init__(self) -> None:
        self._mode = _Mode.NORMAL
        self._line_start = True
        self._held = b""
        self._payload = b""
        self.reports = 0

    def feed(self, chunk: bytes) -> list[Segment]:
        if self._mode is _Mode.NORMAL and not self._held and b":" not in chunk:
            if chunk:  # the hot path: data lines only
                self._line_start = chunk.endswith(b"\n")
                return [chunk]
            return []
        data = self._held + chunk if self._held else chunk
        self._held = b""
        out: list[Segment] = []
        pending_from = -1  # start of a run of plain bytes not yet appended to out
        i = 0
        n = len(data)
        while i < n:
            if self._mode is _Mode.IN_REPORT:
                end = data.find(b"\n", i)
                if end < 0:
                    self._payload += data[i:]
                    i = n
                    break
                self._payload += data[i:end]
                out.append(ReportLine(self._payload.removesuffix(b"\r")))
                self.reports += 1
                self._payload = b""
                self._mode = _Mode.AFTER_REPORT
                i = end + 1
                continue
            if self._mode is _Mode.AFTER_REPORT:
                if data.startswith(b"\n", i):
                    i += 1
                elif data.startswith(b"\r\n", i):
                    i += 2
                elif i == n - 1 and data[i] == 0x0D:  # a "\r" whose "\n" is in the next chunk
                    self._held = b"\r"
                    i = n
                    break
                self._mode = _Mode.NORMAL
                self._line_start = True
                continue
            if self._line_start:
                if data.startswith(MARKER, i):
                    if pending_from >= 0:
                        out.append(data[pending_from:i])
                        pending_from = -1
                    self._mode = _Mode.IN_REPORT
                    i += len(MARKER)
                    continue
                rest = n - i
                if rest < len(MARKER) and MARKER.startswith(data[i:]):
                    if pending_from >= 0:
                        out.append(data[pending_from:i])
                        pending_from = -1
                    self._held = data[i:]
                    i = n
                    break
            if pending_from < 0:
                pending_from = i
            end = data.find(b"\n", i)
            if end < 0:
                self._line_start = False
                i = n
                break
            self._line_start = True
            i = end + 1
        if pending_from >= 0:
            out.append(data[pending_from:i])
        return out

    def close(self) -> list[Segment]:
        """The end of the stream: a held line start, or a report cut short."""
        out: list[Segment] = []
        if self._mode is _Mode.IN_REPORT:
            out.append(ReportLine(self._payload.removesuffix(b"\r")))
            self.reports += 1
        elif self._held and self._mode is _Mode.NORMAL:
            out.append(self._held)
        self._held = b""
        self._payload = b""
        self._mode = _Mode.NORMAL
        return out


_SEARCH, _LINE, _LINE_START, _IN_LINE = range(4)
_CR, _LF = 0x0D, 0x0A
_TAIL = 64  # longer than any announcing line: a line split across segments is still found


class StreamEnd:
    """Watches the bytes sent to a client for the stream's last event (call path rule 7).

    The last event starts with a line the API names (``data: [DONE]`` for chat and completions,
    ``event: response.completed`` and its kin for Responses, ``event: message_stop`` for Messages): the
    ``line`` pattern, which starts with ``\\n`` (a line start) and always contains ``marker``.

    ``announced``: the client has (or is about to get) that line; ``complete``: also the rest of its
    event, up to the blank line that ends it. A line starts after a newline, and such a line inside a
    JSON string never does (JSON escapes newlines), so generated text cannot end a stream early. The
    announcing line must end where the pattern does (``data: [DONE]x`` announces, but ends nothing).
    """

    __slots__ = ("_line", "_marker", "_state", "_tail", "announced", "complete")

    def __init__(self, line: re.Pattern[bytes], marker: bytes) -> None:
        self._line = line
        self._marker = marker
        self._state = _SEARCH
        self._tail = b"\n"  # the stream's start is a line start
        self.announced = False
        self.complete = False

    def sees(self, segment: bytes) -> bool:
        """Take ``segment``, about to be sent; True once the last event is announced."""
        data, i = segment, 0
        while i < len(data) and not self.complete:
            state = self._state
            if state == _SEARCH:
                window = self._tail + data[i:]
                found = self._line.search(window) if self._marker in window else None
                if found is None:
                    self._tail = window[-_TAIL:]
                    break
                self.announced = True
                self._state, self._tail = _LINE, b""
                data, i = window[found.end() :], 0
            elif state == _LINE:  # the rest of the announcing line: nothing but its end
                byte = data[i]
                if byte == _LF:
                    self._state = _LINE_START
                elif byte != _CR:
                    self._state = _SEARCH  # another line after all (the next match needs a newline)
                    continue
                i += 1
            elif state == _LINE_START:
                byte = data[i]
                if byte == _LF:
                    self.complete = True
                elif byte != _CR:
                    self._state = _IN_LINE
                    continue
                i += 1
            else:
                end = data.find(b"\n", i)
                if end < 0:
                    break
                self._state, i = _LINE_START, end + 1
        return self.announced
