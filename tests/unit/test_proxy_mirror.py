"""The program mirror (programs/mirror.py) against the in-memory table, which applies the same rules as
the Redis scripts: what the mirror expects is what the table answers while only this replica writes,
and a program another replica writes on is caught at the first reply and never goes ahead again."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.proxy.programs import CallFinish, CallStart, CallStartResult, MemoryProgramTable
from autellix.proxy.programs.mirror import ProgramMirror, StartTicket


def result(program: str, engine: str = "e0", **fields: object) -> CallStartResult:
    values: dict[str, object] = {
        "program_id": program,
        "call_id": "c",
        "engine_id": engine,
        "pin_created": False,
        "pinned_engine": None,
        "service_plas": 0.0,
        "service_atlas": 0.0,
        "program_wait": 0.0,
        "prior_calls": 0,
        "completed_calls": 0,
        "duplicate": False,
        "engine_loads": {},
        **fields,
    }
    return CallStartResult(**values)  # type: ignore[arg-type]


def test_a_program_this_replica_created_goes_ahead_with_an_empty_context() -> None:
    mirror = ProgramMirror()
    mirror.created("p")
    assert mirror.can_go_ahead("p", "e0", pin=False)
    assert not mirror.can_go_ahead("p", "e0", pin=True)  # a pin could race with another replica's
    ticket = mirror.start("p", "e0", pin=False, ahead=True)
    assert ticket.ahead and ticket.expected is not None
    assert not mirror.replied(ticket, result("p"))


def test_a_private_program_may_create_its_pin_ahead() -> None:
    mirror = ProgramMirror()
    mirror.created("call-1", private=True)
    assert mirror.can_go_ahead("call-1", "e1", pin=True)
    ticket = mirror.start("call-1", "e1", pin=True, ahead=True)
    assert mirror.pin("call-1") == "e1"
    assert not mirror.replied(ticket, result("call-1", "e1", pin_created=True, pinned_engine="e1"))


def test_an_unknown_program_waits_once_then_goes_ahead() -> None:
    mirror = ProgramMirror()
    assert not mirror.can_go_ahead("p", "e0", pin=False)
    ticket = mirror.start("p", "e0", pin=False, ahead=False)
    assert ticket.expected is None
    known = result(
        "p", service_plas=3.0, service_atlas=2.0, program_wait=1.0, prior_calls=4, completed_calls=4
    )
    assert not mirror.replied(ticket, known)
    mirror.finished(CallFinish("p", "c", exec_time=0.5, queue_wait=0.25), call_atlas_at_arrival=2.0)
    assert mirror.can_go_ahead("p", "e0", pin=False)
    expected = mirror.start("p", "e0", pin=False, ahead=True).expected
    assert expected is not None
    assert (expected.service_plas, expected.service_atlas, expected.program_wait) == (3.5, 2.5, 1.25)
    assert (expected.prior_calls, expected.completed_calls) == (5, 5)


def test_a_reply_older_than_a_later_write_is_not_adopted() -> None:
    mirror = ProgramMirror()
    first = mirror.start("p", "e0", pin=False, ahead=False)
    second = mirror.start("p", "e0", pin=False, ahead=False)  # a parallel call, written before any reply
    mirror.replied(first, result("p"))
    assert not mirror.can_go_ahead("p", "e0", pin=False)  # the first reply misses the second start
    mirror.replied(second, result("p", prior_calls=1))
    assert mirror.can_go_ahead("p", "e0", pin=False)


def test_a_differing_reply_makes_the_program_wait_for_the_table_from_then_on() -> None:
    mirror = ProgramMirror()
    mirror.created("p")
    ticket = mirror.start("p", "e0", pin=False, ahead=True)
    assert mirror.replied(ticket, result("p", service_plas=2.0, completed_calls=1))  # another replica's
    assert not mirror.can_go_ahead("p", "e0", pin=False)
    later = mirror.start("p", "e0", pin=False, ahead=False)
    assert later.expected is None
    assert not mirror.replied(later, result("p", service_plas=2.0, prior_calls=1, completed_calls=1))
    assert not mirror.can_go_ahead("p", "e0", pin=False)  # shared for good


def test_pins_come_from_replies_and_a_known_pin_lets_a_pinning_call_go_ahead() -> None:
    mirror = ProgramMirror()
    ticket = mirror.start("p", "e0", pin=True, ahead=False)
    mirror.replied(ticket, result("p", "e1", pinned_engine="e1"))  # pinned by someone else already
    assert mirror.pin("p") == "e1"
    assert mirror.can_go_ahead("p", "e1", pin=True)
    assert not mirror.can_go_ahead("p", "e0", pin=True)


def test_an_ended_program_is_forgotten_even_when_its_reply_comes_later() -> None:
    mirror = ProgramMirror()
    mirror.created("call-1", private=True)
    ticket = mirror.start("call-1", "e0", pin=False, ahead=True)
    mirror.forget("call-1")
    assert not mirror.replied(ticket, result("call-1"))
    assert len(mirror) == 0


def test_the_mirror_keeps_at_most_its_capacity() -> None:
    mirror = ProgramMirror(capacity=3)
    for n in range(10):
        mirror.created(f"p{n}")
        mirror.start(f"p{n}", "e0", pin=False, ahead=False)
    assert len(mirror) == 3 and mirror.can_go_ahead("p9", "e0", pin=False)


# --- the mirror against the table's rules, over random histories ------------------------------------


@dataclass
class World:
    """One program in a table that stands in for Redis; this replica (with its mirror) and another
    replica write on it; replies to this replica's starts arrive later, in the order written."""

    table: MemoryProgramTable = field(default_factory=MemoryProgramTable)
    mirror: ProgramMirror = field(default_factory=ProgramMirror)
    mine: dict[str, float] = field(default_factory=dict)  # my calls in flight -> their ATLAS at arrival
    others: list[str] = field(default_factory=list)
    replies: deque[tuple[StartTicket, CallStartResult, float]] = field(default_factory=deque)
    sequence: int = 0
    went_ahead_stale: int = 0
    differed: int = 0
    other_wrote: bool = False
    ahead_after_a_difference: int = 0

    def start(self, pin: bool) -> None:
        self.sequence += 1
        call = f"mine-{self.sequence}"
        engine = self.mirror.pin("p") or "e0"
        ahead = self.mirror.can_go_ahead("p", engine, pin)
        if ahead and self.differed:
            self.ahead_after_a_difference += 1
        ticket = self.mirror.start("p", engine, pin, ahead)
        answer = self.table.start_call(CallStart("p", call, engine, pin=pin), now=float(self.sequence))
        if ticket.expected is not None and not ticket.expected.matches(answer):
            self.went_ahead_stale += 1 if ahead else 0
        # the call's S: what it was sent with (the mirror's when it went ahead, else the table's)
        self.mine[call] = ticket.expected.service_atlas if ahead and ticket.expected else answer.service_atlas
        self.replies.append((ticket, answer, answer.service_atlas))

    def deliver(self) -> None:
        if self.replies:
            ticket, answer, _ = self.replies.popleft()
            self.differed += self.mirror.replied(ticket, answer)

    def finish(self, pick: int, exec_time: float, wait: float) -> None:
        if not self.mine:
            return
        call = sorted(self.mine)[pick % len(self.mine)]
        atlas = self.mine.pop(call)
        finish = CallFinish("p", call, exec_time=exec_time, queue_wait=wait)
        self.mirror.finished(finish, atlas)
        self.table.finish_call(finish, now=float(self.sequence))

    def other(self, exec_time: float) -> None:
        self.sequence += 1
        call = f"other-{self.sequence}"
        self.table.start_call(CallStart("p", call, "e1"), now=float(self.sequence))
        self.table.finish_call(CallFinish("p", call, exec_time=exec_time), now=float(self.sequence))
        self.other_wrote = True


times = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
operation = st.one_of(
    st.tuples(st.just("start"), st.booleans()),
    st.tuples(st.just("deliver"), st.none()),
    st.tuples(st.just("finish"), st.tuples(st.integers(0, 9), times, times)),
)


def play(ops: list[tuple[str, Any]]) -> World:
    """Run ``ops`` on a world whose program this replica created, then deliver every reply."""
    world = World()
    world.mirror.created("p")
    for name, arg in ops:
        if name == "start":
            world.start(bool(arg))
        elif name == "deliver":
            world.deliver()
        elif name == "finish":
            pick, exec_time, wait = arg
            world.finish(pick, exec_time, wait)
        else:
            world.other(arg)
    while world.replies:
        world.deliver()
    return world


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_alone_every_expectation_is_what_the_table_answers(ops: list[tuple[str, Any]]) -> None:
    world = play(ops)
    assert world.went_ahead_stale == 0 and world.differed == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(operation, st.tuples(st.just("other"), times)), max_size=60))
def test_another_writer_is_caught_and_the_program_never_goes_ahead_again(
    ops: list[tuple[str, Any]],
) -> None:
    world = play(ops)
    assert world.ahead_after_a_difference == 0
    assert world.differed >= world.went_ahead_stale  # every stale call that went ahead was caught
    if not world.other_wrote:
        assert world.went_ahead_stale == 0
