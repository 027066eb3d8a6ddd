"""A streamed reply, relayed to the client chunk by chunk (calls.py rules 4, 5 and 7).

1. Bytes leave in the chunks they came in; only the sidecar's report line is cut out (sse.py's
   :class:`~.sse.ReportStripper`), and its report is applied before the bytes after it are sent, so
   the client cannot see the end of the stream before the table has the call's finish.
2. Against a bare engine (no report line) the proxy's own measurement is applied just before the line
   that announces the stream's last event (the API's :class:`~.sse.StreamEnd`) is sent: wait =
   request sent → first byte, execution = first byte → that line (or the last byte).
3. Once the client has the whole last event the reply is ended; what the upstream still sends
   (normally only the end of its chunked body) is read in the background, for at most
   :data:`DRAIN_SECONDS`, so a client that closes right after the end interrupts nothing.
4. An upstream that breaks off before the last event: the call is finished as failed (measured) and
   the client's stream ends with the API's error event (chat: an error chunk and ``[DONE]``). A stream
   that *ends* before the last event, with no error of the connection, broke off all the same: a
   sidecar whose engine died mid-stream writes its report and closes the stream cleanly. One that
   breaks off after it is ignored (logged at debug).
5. A write that finds the client gone before the last event is announced ends the call as the client's
   cancellation would (the handler is cancelled: the upstream connection is closed, which aborts it).
6. The call's deadline (limits.py rule 4) passing mid-stream cuts it as rule 4 does, with the
   deadline named in the error event (autellix/deadlines.py rule 2). An upstream whose stream stops
   (end of body) before its last event is a break-off too: the client's stream still ends with the
   API's error event, never as if it were complete.
7. A stream whose reply the engine stores (Responses) names it early (``response.created``): its id
   is remembered with the call's program and engine before the event that names it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from .apis import Api
from .attempt import Attempt, Ledger
from .background import BackgroundTasks
from .headers import client_headers
from .metrics import ProxyMetrics
from .programs import StoredReply
from .sse import ReportLine, ReportStripper, StreamEnd
from .transport import UpstreamBroken, UpstreamReply

log = logging.getLogger("autellix.proxy.forward")

DRAIN_SECONDS = 2.0  # an upstream that keeps a stream open after its end loses the connection, not the call


class StreamRelay:
    def __init__(self, ledger: Ledger, metrics: ProxyMetrics, background: BackgroundTasks) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.background = background

    async def relay(
        self, request: web.Request, reply: UpstreamReply, api: Api, engine: str, attempt: Attempt
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=client_headers(reply.headers.items()))
        await response.prepare(request)
        stripper = ReportStripper()
        ending = StreamEnd(api.stream_end, api.stream_marker)
        ids = api.stream_ids() if api.stream_ids is not None and reply.status < 400 else None
        ledger = self.ledger
        first: float | None = None
        ok = reply.status < 400

        async def finish_measured() -> None:  # rule 2
            self.metrics.child(self.metrics.reports, "measured").inc()
            end = time.perf_counter()
            begin = first or end
            await ledger.finish(attempt, None, begin - attempt.sent, end - begin, ok=ok, end=attempt.one_shot)

        async def send(data: bytes) -> None:
            try:
                await response.write(data)
            except ConnectionResetError:
                if not ending.announced:  # rule 5
                    raise asyncio.CancelledError from None

        async def emit(segments: list[bytes | ReportLine]) -> None:
            for segment in segments:
                if isinstance(segment, ReportLine):  # rule 1
                    if not attempt.finished:
                        report = ledger.report(segment.payload)
                        end = time.perf_counter()
                        begin = first or end
                        await ledger.finish(
                            attempt, report, begin - attempt.sent, end - begin, ok=ok, end=attempt.one_shot
                        )
                    continue
                if ending.sees(segment) and not attempt.finished:
                    await finish_measured()
                if ids is not None and (reply_id := ids.feed(segment)) is not None:  # rule 6
                    stored = StoredReply(attempt.program_id, engine)
                    await ledger.store.remember_reply(reply_id, stored, time.time())
                await send(segment)

        failure: UpstreamBroken | None = None
        loop = asyncio.get_running_loop()
        while not ending.complete:
            try:  # only the upstream's errors are caught here; the client's (while writing) propagate
                async with asyncio.timeout_at(attempt.deadline):
                    chunk = await reply.readany()
            except UpstreamBroken as exc:
                failure = exc
                break
            except TimeoutError:  # rule 6
                if loop.time() < (attempt.deadline or 0.0):
                    raise  # not the deadline's
                self.metrics.child(self.metrics.rejected, "deadline_midstream").inc()
                failure = UpstreamBroken(f"the call's deadline ({attempt.timeout:g} s) passed", True)
                break
            if not chunk:
                if not ending.announced:  # rule 6: the stream stopped short of its last event
                    failure = UpstreamBroken("the stream ended before its last event")
                break
            if first is None:
                first = time.perf_counter()
                self.metrics.ttft.observe(first - attempt.started)
            await emit(stripper.feed(chunk))
        if not ending.complete:
            await emit(stripper.close())
        attempt.upstream_end = time.perf_counter()
        if failure is None and not ending.announced:  # rule 4: ended early, without an error of its own
            failure = UpstreamBroken("the stream ended before its last event")
        if failure is not None and not ending.announced:  # rule 4
            ok = False
            self.metrics.child(self.metrics.upstream_errors, engine, "midstream").inc()
            if not attempt.finished:
                await finish_measured()
            await send(api.stream_error(f"Upstream {engine} failed mid-stream: {failure}"))
        elif failure is not None:
            log.debug("upstream %s failed after the end of its stream (ignored): %s", engine, failure)
        elif not attempt.finished:
            await finish_measured()
        if ending.complete and not reply.at_eof():  # rule 3
            attempt.draining = True
            self.background.spawn(_drain(reply))
        # A client that closed right after the end makes this write fail; aiohttp ignores it too.
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


async def _drain(reply: UpstreamReply) -> None:
    """Rule 3: read what the upstream sends after the end, so that its connection can be reused."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await reply.readany():
                pass
    except (TimeoutError, UpstreamBroken):
        pass
    finally:
        reply.close()
