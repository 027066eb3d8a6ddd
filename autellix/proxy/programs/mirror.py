"""This replica's mirror of the priority context of the programs it serves: what lets a call leave for
its engine while its start is still on the way to a shared (Redis) table.

Theory of operation
-------------------
With a shared table, a call's start is one Redis round trip (the program's service, wait and pin come
back in it), and the call cannot be forwarded before the answer: every call pays the trip before its
first byte. Yet most of the time the answer is already known here. A program's service changes only
when one of its calls finishes (rules.py rule 1), and when every call of the program went through
this replica, this replica wrote every change itself. The mirror keeps that knowledge and says when
it is enough (the paper reads the service once at a call's arrival, §4; this keeps that reading
exact whenever it can tell that it is, and says so when it was not).

1. An entry is *exact* when its context (PLAS service, ATLAS path, wait, calls started and completed)
   equals what Redis holds after every operation this replica wrote on the program, provided no
   other replica wrote on it. It becomes exact from a start's reply when this replica wrote nothing
   on the program after that start (the reply shows the program as it was at the start), and at
   creation by this replica (``POST /v1/programs``, or a call without a program id, whose program is
   new by construction).
2. A finish this replica writes advances an exact entry by rule 4, with the same arithmetic as the
   Redis script (:func:`~.rules.finished_service`), so the mirror stays equal to the table.
3. A start may go *ahead* (the call is forwarded with the mirrored context, its start written behind
   this replica's earlier operations and checked later) when the entry is exact, the program is not
   *shared*, and the start decides no pin: routing did not ask to pin, or asked to pin where the
   program is pinned already (pins never move), or the program is *private* (a call without a
   program id: no other replica can know its id). Any other start that would create a pin waits for
   Redis, because two replicas may race to pin the same program.
4. Every start (ahead or not) on an exact entry records what Redis must answer: engine, pin,
   context and counts. A reply that differs shows that another replica wrote on the program since
   this replica last heard of it (or that the program expired and came back). The program is then
   *shared* for as long as the mirror keeps it: its starts wait for Redis again, whose answer is exact.
   So a context sent ahead is stale for at most the calls that went ahead before the first differing
   reply arrived (one, for a chain); the store counts them.
5. The pin comes from every reply. The mirror holds at most ``capacity`` programs (least recently
   used first out), forgets a program when it ends, and everything after a Redis outage (Redis may
   have lost or kept any of what was sent meanwhile). A start whose reply never came leaves its
   program unknown until a later reply.

Nothing here touches IO or the clock: the store (proxy/store.py) calls it around its table operations.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .model import CallFinish, CallStartResult
from .rules import finished_service

DEFAULT_CAPACITY = 100_000


@dataclass(frozen=True, slots=True)
class Expectation:
    """What Redis must answer to one start for the mirror to have been right (rule 4)."""

    engine_id: str
    pinned_engine: str | None
    service_plas: float
    service_atlas: float
    program_wait: float
    prior_calls: int
    completed_calls: int

    def matches(self, result: CallStartResult) -> bool:
        return (
            result.engine_id == self.engine_id
            and result.pinned_engine == self.pinned_engine
            and result.service_plas == self.service_plas
            and result.service_atlas == self.service_atlas
            and result.program_wait == self.program_wait
            and result.prior_calls == self.prior_calls
            and result.completed_calls == self.completed_calls
        )


@dataclass(frozen=True, slots=True)
class StartTicket:
    """Handed out for every start written on the table; given back with its reply."""

    written: int  # the program's count of operations written by this replica, this start included
    expected: Expectation | None  # None: the entry was not exact when the start was written
    ahead: bool  # the call was forwarded before the reply (rule 3)


@dataclass(slots=True)
class _Entry:
    exact: bool = False
    shared: bool = False
    private: bool = False
    plas: float = 0.0
    atlas: float = 0.0
    wait: float = 0.0
    started: int = 0
    completed: int = 0
    pin: str | None = None
    written: int = 0  # operations of this program written by this replica (starts and finishes)


class ProgramMirror:
    """The rules above over an LRU of programs."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, program_id: str) -> _Entry:
        entry = self._entries.get(program_id)
        if entry is None:
            entry = self._entries[program_id] = _Entry()
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(program_id)
        return entry

    def pin(self, program_id: str) -> str | None:
        entry = self._entries.get(program_id)
        return entry.pin if entry is not None else None

    def created(self, program_id: str, private: bool = False) -> None:
        """Rule 1: this replica created the program (it is empty, with no pin); ``private``: no other
        replica can name it (rule 3)."""
        self._entries[program_id] = _Entry(exact=True, private=private)
        self._entries.move_to_end(program_id)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def can_go_ahead(self, program_id: str, engine_id: str, pin: bool) -> bool:
        """Rule 3, before the start is written."""
        entry = self._entries.get(program_id)
        if entry is None or not entry.exact or entry.shared:
            return False
        return not pin or entry.pin == engine_id or (entry.private and entry.pin is None)

    def start(self, program_id: str, engine_id: str, pin: bool, ahead: bool) -> StartTicket:
        """A start of the program is written now (``ahead``: see :meth:`can_go_ahead`)."""
        entry = self._entry(program_id)
        entry.written += 1
        expected = None
        if entry.exact and not entry.shared:
            final = entry.pin if pin and entry.pin is not None else engine_id
            expected = Expectation(
                engine_id=final,
                pinned_engine=entry.pin if entry.pin is not None or not pin else engine_id,
                service_plas=entry.plas,
                service_atlas=entry.atlas,
                program_wait=entry.wait,
                prior_calls=entry.started,
                completed_calls=entry.completed,
            )
            entry.started += 1
            if pin and entry.pin is None:
                entry.pin = engine_id
        return StartTicket(entry.written, expected, ahead and expected is not None)

    def replied(self, ticket: StartTicket, result: CallStartResult) -> bool:
        """Rules 1, 4 and 5 for a start's reply; True when it differs from what was expected."""
        differs = ticket.expected is not None and not ticket.expected.matches(result)
        entry = self._entries.get(result.program_id)
        if entry is None:  # ended (or pushed out) meanwhile
            return differs
        entry.pin = result.pinned_engine or entry.pin
        if differs:
            entry.shared = True
            entry.exact = False
        elif ticket.expected is None and ticket.written == entry.written and not entry.shared:
            entry.exact = True
            entry.plas, entry.atlas = result.service_plas, result.service_atlas
            entry.wait = result.program_wait
            entry.started, entry.completed = result.prior_calls + 1, result.completed_calls
        return differs

    def pinned(self, program_id: str, engine_id: str | None) -> None:
        """Rule 5 alone, where no call can go ahead (no shared table): only the pin is kept."""
        if engine_id is not None:
            self._entry(program_id).pin = engine_id

    def start_failed(self, program_id: str) -> None:
        """A start whose reply never came (an outage): what Redis holds is unknown now."""
        entry = self._entries.get(program_id)
        if entry is not None:
            entry.exact = False

    def finished(self, finish: CallFinish, call_atlas_at_arrival: float) -> None:
        """Rule 2: this replica writes ``finish`` (its call arrived with ``call_atlas_at_arrival``)."""
        entry = self._entries.get(finish.program_id)
        if entry is None:
            return
        entry.written += 1
        if entry.exact:
            entry.plas, entry.atlas, entry.wait = finished_service(
                entry.plas, entry.atlas, entry.wait, call_atlas_at_arrival, finish
            )
            entry.completed += 1

    def forget(self, program_id: str) -> None:
        """Rule 5: the program ended."""
        self._entries.pop(program_id, None)

    def clear(self) -> None:
        """Rule 5: after an outage."""
        self._entries.clear()
