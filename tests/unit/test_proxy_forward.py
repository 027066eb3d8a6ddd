"""Pieces of the call path (calls.py rules 4-7): where a stream ends, which connect failures count
against a backend, and a finish that the client's departure must not cut short (store.py rule 4)."""

from __future__ import annotations

import asyncio
import errno
from typing import Any, cast

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.apis import CHAT
from autellix.proxy.programs import CallFinish, ProgramState
from autellix.proxy.sse import StreamEnd
from autellix.proxy.store import ProgramStore, StoreEvents
from autellix.proxy.transport import backend_unreachable

EVENTS = [
    b'data: {"choices":[{"delta":{"content":"he"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n',  # generated text, not the end
    b'data: {"choices":[{"delta":{"content":"\\ndata: [DONE]\\n\\n"}}]}\n\n',  # escaped newlines
    b": a comment [DONE]\n\n",
]


def watch(chunks: list[bytes]) -> list[tuple[bool, bool]]:
    """(announced, complete) after each chunk."""
    ending = StreamEnd(CHAT.stream_end, CHAT.stream_marker)
    seen = []
    for chunk in chunks:
        ending.sees(chunk)
        seen.append((ending.announced, ending.complete))
    return seen


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"data: [DONE]\n\n"], [(True, True)]),
        (
            [EVENTS[0], b"data: [DONE]", b"\n", b"\n"],
            [(False, False), (True, False), (True, False), (True, True)],
        ),
        ([EVENTS[0] + b"data:[DONE]\r\n\r\n"], [(True, True)]),
        ([b"data: [DO", b"NE]\n\n"], [(False, False), (True, True)]),
        (EVENTS, [(False, False)] * 4),
        ([b"data: [DONE]x\n\n"], [(True, False)]),  # not the end event, but the client may act on the line
    ],
)
def test_where_a_stream_ends(chunks: list[bytes], expected: list[tuple[bool, bool]]) -> None:
    assert watch(chunks) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=6), st.lists(st.integers(min_value=1, max_value=400)))
def test_any_split_ends_where_the_done_event_is_sent(events: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(events) + b"data: [DONE]\n\n"
    line_end = len(stream) - 2  # "data: [DONE]" is sent once these bytes are
    points = sorted({min(cut, len(stream)) for cut in cuts} | {len(stream)})
    chunks, sent, start = [], [], 0
    for point in points:
        if point > start:
            chunks.append(stream[start:point])
            sent.append(point)
            start = point
    for (announced, complete), upto in zip(watch(chunks), sent, strict=True):
        assert announced == (upto >= line_end)
        assert complete == (upto == len(stream))


def connector_error(code: int) -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(cast(Any, None), OSError(code, "x"))


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (connector_error(errno.ECONNREFUSED), True),
        (connector_error(errno.EHOSTUNREACH), True),
        (aiohttp.ConnectionTimeoutError(), True),
        (connector_error(errno.EMFILE), False),  # our own host is out of sockets: not the backend's fault
        (connector_error(errno.EADDRNOTAVAIL), False),
        (aiohttp.SocketTimeoutError(), False),  # a slow reply, not a failed connection
        (aiohttp.ServerDisconnectedError(), False),  # a kept-alive connection closed: retried, not counted
    ],
)
def test_which_connect_failures_count_against_the_backend(error: BaseException, counts: bool) -> None:
    assert backend_unreachable(error) is counts


class SlowClusterTables:
    """Tables on an unordered table (Redis Cluster) whose finish waits for ``gate``: the client may
    leave in the meantime."""

    ordered = False
    outages = 0

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.finished: list[CallFinish] = []

    def finish_soon(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> asyncio.Future[ProgramState | None]:
        async def record() -> ProgramState | None:
            self.entered.set()
            await self.gate.wait()
            self.finished.append(finish)
            return ProgramState(finish.program_id, 0.0, 3.0, wait=1.0) if end_program else None

        return asyncio.ensure_future(record())


class OrderedTables:
    """Tables whose finishes are sent in order at once (memory, standalone Redis); their outcome
    arrives when the test resolves ``outcome``."""

    ordered = True
    outages = 0

    def __init__(self) -> None:
        self.outcome: asyncio.Future[ProgramState | None] | None = None
        self.sent: list[tuple[CallFinish, bool]] = []

    def finish_soon(
        self, finish: CallFinish, now: float, *, end_program: bool = False
    ) -> asyncio.Future[ProgramState | None]:
        self.sent.append((finish, end_program))
        self.outcome = asyncio.get_running_loop().create_future()
        return self.outcome


def store_on(tables: object, ended: list[tuple[float, float]] | None = None) -> ProgramStore:
    seen = ended if ended is not None else []
    events = StoreEvents(on_program_end=lambda state, how: seen.append((state.service_plas, state.wait)))
    return ProgramStore(cast(Any, tables), events=events)


async def test_a_finish_on_an_unordered_table_survives_the_cancellation_of_its_handler() -> None:
    tables = SlowClusterTables()
    store = store_on(tables)
    finish = CallFinish("p", "c", exec_time=2.0, queue_wait=0.5)
    handler = asyncio.create_task(store.finish(finish, 0.0, atlas_at_arrival=0.0, end_program=False))
    await tables.entered.wait()
    handler.cancel()  # the client left while Redis recorded the finish
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert tables.finished == []
    tables.gate.set()
    await asyncio.wait_for(asyncio.gather(*store.background), 5)
    assert [(f.call_id, f.exec_time, f.ok) for f in tables.finished] == [("c", 2.0, True)]


@pytest.mark.parametrize("end", [False, True])
async def test_a_finish_on_an_ordered_table_is_sent_without_waiting_for_its_outcome(end: bool) -> None:
    tables, ended = OrderedTables(), list[tuple[float, float]]()
    store = store_on(tables, ended)
    finish = CallFinish("p", "c", exec_time=2.0, queue_wait=0.5)
    await store.finish(finish, 0.0, atlas_at_arrival=0.0, end_program=end)  # returns, outcome pending
    assert [(f.call_id, e) for f, e in tables.sent] == [("c", end)]
    assert tables.outcome is not None and not tables.outcome.done()
    tables.outcome.set_result(ProgramState("p", 0.0, 7.0, wait=0.5) if end else None)
    await asyncio.sleep(0)  # the outcome's callbacks run
    assert ended == ([(7.0, 0.5)] if end else [])
