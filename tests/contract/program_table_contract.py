"""The program-table contract: the behaviour every AsyncProgramTable must show, as reusable tests.

The rules are those of ``autellix/proxy/programs/rules.py`` (paper §4, reference.md §1). Tests pass
``now`` explicitly, so no clock is involved and implementations are compared on identical inputs.

How to run it against an implementation: subclass :class:`ProgramTableContract` in a test module
(the class name must start with ``Test`` so that pytest collects it) and define a ``program_table``
fixture that yields a *fresh, empty* table built with :data:`CONTRACT_EXPIRY`. For the Redis table,
e.g. ``tests/integration/test_programs_redis_contract.py``::

    import pytest
    from tests.contract.program_table_contract import CONTRACT_EXPIRY, ProgramTableContract

    @pytest.mark.redis
    class TestRedisProgramTable(ProgramTableContract):
        @pytest.fixture
        async def program_table(self, redis_url):
            table = RedisProgramTable(redis_url, expiry=CONTRACT_EXPIRY, key_prefix=unique_prefix())
            yield table
            await table.aclose()

Every test method is async (pytest-asyncio's auto mode runs them); this module itself is never
collected (its file name does not start with ``test_``).
"""

from __future__ import annotations

import random

from autellix.proxy.programs import AsyncProgramTable, CallFinish, CallStart, ProgramExpiry

CONTRACT_EXPIRY = ProgramExpiry(idle_ttl=60.0, stuck_ttl=600.0)
IDLE = CONTRACT_EXPIRY.idle_ttl
STUCK = CONTRACT_EXPIRY.stuck_ttl


def start(
    program: str,
    call: str,
    engine: str = "e0",
    *,
    thread: str | None = None,
    pin: bool = False,
    tokens: int = 100,
) -> CallStart:
    return CallStart(program, call, engine, thread_id=thread, input_tokens=tokens, pin=pin)


def finish(
    program: str, call: str, exec_time: float = 1.0, wait: float = 0.0, *, ok: bool = True
) -> CallFinish:
    return CallFinish(program, call, exec_time=exec_time, queue_wait=wait, ok=ok)


class ProgramTableContract:
    """Subclass with a ``program_table`` fixture (see the module docstring)."""

    # --- creation and lookup -------------------------------------------------------------------

    async def test_get_of_unknown_program_is_none(self, program_table: AsyncProgramTable) -> None:
        assert await program_table.get("nobody") is None

    async def test_first_call_creates_the_program(self, program_table: AsyncProgramTable) -> None:
        result = await program_table.start_call(start("p", "c1", "e1", thread="t1"), now=5.0)
        assert (result.engine_id, result.prior_calls, result.completed_calls) == ("e1", 0, 0)
        assert (result.service_plas, result.service_atlas, result.program_wait) == (0.0, 0.0, 0.0)
        state = await program_table.get("p")
        assert state is not None
        assert (state.created_at, state.last_arrival, state.last_completion) == (5.0, 5.0, None)
        assert state.calls_started == 1
        assert [(c.call_id, c.thread_id, c.engine_id, c.arrival) for c in state.in_flight] == [
            ("c1", "t1", "e1", 5.0)
        ]

    async def test_a_programs_kind_is_the_first_one_a_call_names(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "c1"), now=0.0)  # names none
        await program_table.start_call(CallStart("p", "c2", "e0", kind="chat"), now=1.0)
        await program_table.start_call(CallStart("p", "c3", "e0", kind="tool-use"), now=2.0)
        await program_table.finish_call(finish("p", "c2", exec_time=1.5), now=3.0)
        state = await program_table.get("p")
        assert state is not None and state.kind == "chat"
        assert state.response_time == 3.0  # creation to the last completion
        ended = await program_table.end("p", now=4.0)
        assert ended is not None and ended.kind == "chat"

    async def test_in_flight_calls_are_kept_per_thread(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a", thread=None), now=1.0)
        await program_table.start_call(start("p", "b", thread="t1"), now=2.0)
        await program_table.start_call(start("p", "c", thread="t1"), now=3.0)
        state = await program_table.get("p")
        assert state is not None
        threads = state.threads()
        assert {t: [c.call_id for c in calls] for t, calls in threads.items()} == {
            None: ["a"],
            "t1": ["b", "c"],
        }

    # --- service: PLAS sum, ATLAS critical path, waits -----------------------------------------

    async def test_plas_service_is_the_sum_of_completed_exec_times(
        self, program_table: AsyncProgramTable
    ) -> None:
        for i, exec_time in enumerate([2.0, 3.0, 1.0]):
            await program_table.start_call(start("p", f"c{i}"), now=10.0 * i)
            await program_table.finish_call(finish("p", f"c{i}", exec_time), now=10.0 * i + 5)
        state = await program_table.get("p")
        assert state is not None
        assert state.service_plas == 6.0
        assert state.service_atlas == 6.0  # a chain: the critical path is the whole program
        assert (state.calls_completed, state.last_completion) == (3, 25.0)

    async def test_atlas_keeps_the_longest_path_the_papers_example(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "root"), now=0.0)
        await program_table.finish_call(finish("p", "root", 2.0), now=2.0)  # S = 2
        first = await program_table.start_call(start("p", "a", thread="a"), now=3.0)
        second = await program_table.start_call(start("p", "b", thread="b"), now=3.0)
        assert first.service_atlas == second.service_atlas == 2.0  # both inherit S at arrival
        await program_table.finish_call(finish("p", "a", 3.0), now=6.0)
        await program_table.finish_call(finish("p", "b", 1.0), now=6.5)
        state = await program_table.get("p")
        assert state is not None
        assert state.service_atlas == 5.0  # max(2 + 3, 2 + 1)
        assert state.service_plas == 6.0  # 2 + 3 + 1

    async def test_a_start_reports_the_service_at_arrival_and_does_not_change_it(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "c1"), now=0.0)
        await program_table.finish_call(finish("p", "c1", 4.0, wait=0.5), now=5.0)
        result = await program_table.start_call(start("p", "c2"), now=6.0)
        assert (result.service_plas, result.service_atlas, result.program_wait) == (4.0, 4.0, 0.5)
        assert (result.prior_calls, result.completed_calls) == (1, 1)
        state = await program_table.get("p")
        assert state is not None
        assert (state.service_plas, state.service_atlas, state.wait) == (4.0, 4.0, 0.5)

    async def test_program_wait_sums_completed_calls_queue_waits(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "a"), now=0.0)
        await program_table.start_call(start("p", "b"), now=0.0)
        await program_table.finish_call(finish("p", "a", 1.0, wait=0.25), now=1.0)
        await program_table.finish_call(finish("p", "b", 1.0, wait=0.5), now=2.0)
        state = await program_table.get("p")
        assert state is not None
        assert state.wait == 0.75

    async def test_a_failed_call_adds_its_exec_time_and_is_flagged(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "c"), now=0.0)
        await program_table.finish_call(finish("p", "c", 1.5, ok=False), now=2.0)
        state = await program_table.get("p")
        assert state is not None
        assert (state.service_plas, state.calls_completed, state.calls_failed) == (1.5, 1, 1)

    async def test_negative_or_nan_measurements_count_as_zero(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a"), now=0.0)
        await program_table.start_call(start("p", "b"), now=0.0)
        await program_table.finish_call(finish("p", "a", -3.0, wait=-1.0), now=1.0)
        await program_table.finish_call(finish("p", "b", float("nan"), wait=float("inf")), now=1.0)
        state = await program_table.get("p")
        assert state is not None
        assert (state.service_plas, state.service_atlas, state.wait) == (0.0, 0.0, 0.0)

    async def test_token_counts_accumulate(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "c"), now=0.0)
        report = CallFinish("p", "c", exec_time=1.0, prompt_tokens=300, cached_tokens=200, output_tokens=40)
        await program_table.finish_call(report, now=1.0)
        state = await program_table.get("p")
        assert state is not None
        assert (state.prompt_tokens, state.cached_tokens, state.output_tokens) == (300, 200, 40)

    # --- pins ----------------------------------------------------------------------------------

    async def test_the_first_pin_request_pins_the_program(self, program_table: AsyncProgramTable) -> None:
        result = await program_table.start_call(start("p", "c1", "e2", pin=True, tokens=5000), now=0.0)
        assert (result.engine_id, result.pin_created, result.pinned_engine) == ("e2", True, "e2")
        state = await program_table.get("p")
        assert state is not None
        assert state.pinned_engine == "e2"

    async def test_pins_never_move(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "c1", "e2", pin=True), now=0.0)
        again = await program_table.start_call(start("p", "c2", "e5", pin=True), now=1.0)
        assert (again.engine_id, again.pin_created, again.pinned_engine) == ("e2", False, "e2")
        assert await program_table.engine_loads() == {"e2": 2}
        state = await program_table.get("p")
        assert state is not None
        assert state.pinned_engine == "e2"
        assert [c.engine_id for c in state.in_flight] == ["e2", "e2"]

    async def test_an_unpinned_start_goes_where_routing_sent_it(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "long", "e2", pin=True), now=0.0)
        short = await program_table.start_call(start("p", "short", "e7"), now=1.0)
        assert (short.engine_id, short.pin_created, short.pinned_engine) == ("e7", False, "e2")

    async def test_a_pin_request_for_the_pinned_engine_creates_nothing(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "c1", "e1", pin=True), now=0.0)
        again = await program_table.start_call(start("p", "c2", "e1", pin=True), now=0.0)
        assert (again.engine_id, again.pin_created) == ("e1", False)

    # --- engine loads --------------------------------------------------------------------------

    async def test_loads_go_up_on_start_and_down_on_finish(self, program_table: AsyncProgramTable) -> None:
        first = await program_table.start_call(start("p", "a", "e1"), now=0.0)
        assert first.engine_loads == {"e1": 1}
        second = await program_table.start_call(start("q", "b", "e1"), now=0.0)
        third = await program_table.start_call(start("q", "c", "e2"), now=0.0)
        assert (second.engine_loads, third.engine_loads) == ({"e1": 2}, {"e1": 2, "e2": 1})
        await program_table.finish_call(finish("p", "a"), now=1.0)
        assert await program_table.engine_loads() == {"e1": 1, "e2": 1}
        await program_table.finish_call(finish("q", "b"), now=1.0)
        await program_table.finish_call(finish("q", "c"), now=1.0)
        assert await program_table.engine_loads() == {}

    async def test_a_duplicate_finish_is_ignored(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a", "e1"), now=0.0)
        await program_table.start_call(start("p", "b", "e1"), now=0.0)
        assert await program_table.finish_call(finish("p", "a", 2.0), now=1.0) is not None
        assert await program_table.finish_call(finish("p", "a", 2.0), now=2.0) is None
        state = await program_table.get("p")
        assert state is not None
        assert (state.service_plas, state.calls_completed, state.last_completion) == (2.0, 1, 1.0)
        assert await program_table.engine_loads() == {"e1": 1}

    async def test_a_duplicate_start_is_idempotent(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a", "e1", pin=True), now=0.0)
        again = await program_table.start_call(start("p", "a", "e3"), now=1.0)
        assert (again.engine_id, again.duplicate, again.prior_calls) == ("e1", True, 0)
        assert await program_table.engine_loads() == {"e1": 1}
        state = await program_table.get("p")
        assert state is not None
        assert (state.calls_started, state.last_arrival) == (1, 0.0)

    async def test_finishes_of_unknown_calls_change_nothing(self, program_table: AsyncProgramTable) -> None:
        assert await program_table.finish_call(finish("nobody", "x"), now=0.0) is None
        await program_table.start_call(start("p", "a", "e1"), now=0.0)
        assert await program_table.finish_call(finish("p", "x", 9.0), now=1.0) is None
        state = await program_table.get("p")
        assert state is not None
        assert (state.service_plas, state.last_completion) == (0.0, None)
        assert await program_table.engine_loads() == {"e1": 1}

    async def test_end_releases_in_flight_calls(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a", "e1"), now=0.0)
        await program_table.start_call(start("p", "b", "e2"), now=0.0)
        await program_table.start_call(start("q", "c", "e1"), now=0.0)
        ended = await program_table.end("p", now=1.0)
        assert ended is not None
        assert sorted(c.call_id for c in ended.in_flight) == ["a", "b"]
        assert await program_table.get("p") is None
        assert await program_table.engine_loads() == {"e1": 1}
        # a late finish of an ended program is a no-op and cannot drive a count below zero
        assert await program_table.finish_call(finish("p", "a"), now=2.0) is None
        assert await program_table.engine_loads() == {"e1": 1}

    async def test_end_of_unknown_program_is_none(self, program_table: AsyncProgramTable) -> None:
        assert await program_table.end("nobody", now=0.0) is None

    async def test_a_program_restarted_after_end_starts_from_zero(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "a", "e1", pin=True), now=0.0)
        await program_table.finish_call(finish("p", "a", 3.0), now=1.0)
        await program_table.end("p", now=2.0)
        result = await program_table.start_call(start("p", "b", "e2", pin=True), now=3.0)
        assert (result.service_plas, result.prior_calls, result.engine_id, result.pin_created) == (
            0.0,
            0,
            "e2",
            True,
        )

    # --- expiry --------------------------------------------------------------------------------

    async def test_gc_expires_idle_programs_after_the_ttl_and_not_before(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "a"), now=0.0)
        await program_table.finish_call(finish("p", "a"), now=10.0)  # last activity: 10
        assert await program_table.gc(now=10.0 + IDLE) == []
        assert await program_table.get("p") is not None
        assert await program_table.gc(now=10.0 + IDLE + 0.001) == ["p"]
        assert await program_table.get("p") is None

    async def test_any_arrival_keeps_a_program_alive(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("p", "a"), now=0.0)
        await program_table.finish_call(finish("p", "a"), now=1.0)
        await program_table.start_call(start("p", "b"), now=50.0)
        await program_table.finish_call(finish("p", "b"), now=51.0)
        assert await program_table.gc(now=1.0 + IDLE + 1) == []
        assert await program_table.gc(now=51.0 + IDLE + 1) == ["p"]

    async def test_programs_with_calls_in_flight_expire_only_after_the_stuck_ttl(
        self, program_table: AsyncProgramTable
    ) -> None:
        await program_table.start_call(start("p", "a", "e1"), now=0.0)
        assert await program_table.gc(now=IDLE * 2) == []
        assert await program_table.gc(now=STUCK) == []
        assert await program_table.engine_loads() == {"e1": 1}
        assert await program_table.gc(now=STUCK + 0.001) == ["p"]
        assert await program_table.engine_loads() == {}

    async def test_gc_returns_sorted_ids_and_spares_live_programs(
        self, program_table: AsyncProgramTable
    ) -> None:
        for program in ["zeta", "alpha", "mid"]:
            await program_table.start_call(start(program, "c"), now=0.0)
            await program_table.finish_call(finish(program, "c"), now=0.0)
        await program_table.start_call(start("live", "c"), now=IDLE)
        assert await program_table.gc(now=IDLE + 1) == ["alpha", "mid", "zeta"]
        assert await program_table.get("live") is not None

    # --- isolation and invariants --------------------------------------------------------------

    async def test_programs_are_isolated(self, program_table: AsyncProgramTable) -> None:
        await program_table.start_call(start("a", "c1", "e1", pin=True), now=0.0)
        before = await program_table.get("a")
        await program_table.start_call(start("b", "c1", "e2", pin=True), now=1.0)
        await program_table.finish_call(finish("b", "c1", 7.0, wait=2.0), now=2.0)
        await program_table.finish_call(finish("b", "c1", 7.0), now=3.0)
        await program_table.end("b", now=4.0)
        assert await program_table.get("a") == before

    async def test_a_random_operation_sequence_keeps_the_invariants(
        self, program_table: AsyncProgramTable
    ) -> None:
        rng = random.Random(20250219)
        programs = [f"p{i}" for i in range(6)]
        engines = ["e0", "e1", "e2"]
        started: list[tuple[str, str]] = []
        pin_requested: set[str] = set()
        previous: dict[str, tuple[float, float]] = {}
        now = 0.0
        for step in range(300):
            now += rng.choice([0.0, 0.5, 3.0, 20.0])
            op = rng.random()
            if op < 0.45 or not started:
                program = rng.choice(programs)
                call = f"c{step}"
                pin = rng.random() < 0.3
                await program_table.start_call(start(program, call, rng.choice(engines), pin=pin), now=now)
                started.append((program, call))
                if pin:
                    pin_requested.add(call)
            elif op < 0.85:
                program, call = rng.choice(started)
                await program_table.finish_call(finish(program, call, rng.uniform(-0.5, 4.0), 0.1), now=now)
            elif op < 0.93:
                await program_table.end(rng.choice(programs), now=now)
            else:
                await program_table.gc(now=now)
            expected: dict[str, int] = {}
            for program in programs:
                state = await program_table.get(program)
                if state is None:
                    previous.pop(program, None)
                    continue
                for entry in state.in_flight:
                    expected[entry.engine_id] = expected.get(entry.engine_id, 0) + 1
                assert state.service_atlas <= state.service_plas
                plas, atlas = previous.get(program, (0.0, 0.0))
                assert state.service_plas >= plas and state.service_atlas >= atlas
                previous[program] = (state.service_plas, state.service_atlas)
                for entry in state.in_flight:
                    if entry.call_id in pin_requested:  # every pin request ends on the one pin
                        assert entry.engine_id == state.pinned_engine
            assert await program_table.engine_loads() == expected
