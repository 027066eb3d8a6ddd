"""The program table's interface, in a synchronous and an asynchronous flavour with one semantics.

The synchronous flavour is what the embedded default and the discrete-event simulation call; the
asynchronous one is what the proxy calls, so that a Redis table (one atomic Lua script per method)
can stand in for the in-memory one. The semantics of every method are the rules of :mod:`.rules`;
``tests/contract/program_table_contract.py`` is the executable statement of them.

Time is always an argument: ``now`` is the caller's clock (seconds), so tests and simulations pass
virtual time and every implementation agrees on expiry.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .model import CallFinish, CallStart, CallStartResult, ProgramState


@runtime_checkable
class ProgramTable(Protocol):
    def start_call(self, start: CallStart, now: float) -> CallStartResult:
        """Record a call's start atomically, resolving the pin (rules 1-3, 6)."""
        ...

    def finish_call(self, finish: CallFinish, now: float) -> ProgramState | None:
        """Apply a call's measurements; None (and no change) when the call is not in flight."""
        ...

    def get(self, program_id: str) -> ProgramState | None: ...

    def end(self, program_id: str, now: float) -> ProgramState | None:
        """Explicit end (``DELETE /v1/programs/{id}``): drop the program, release its in-flight calls."""
        ...

    def gc(self, now: float) -> list[str]:
        """Drop expired programs, releasing their in-flight calls; their ids, sorted."""
        ...

    def engine_loads(self) -> dict[str, int]:
        """Outstanding calls per engine; only engines with at least one call appear."""
        ...


@runtime_checkable
class AsyncProgramTable(Protocol):
    async def start_call(self, start: CallStart, now: float) -> CallStartResult: ...

    async def finish_call(self, finish: CallFinish, now: float) -> ProgramState | None: ...

    async def get(self, program_id: str) -> ProgramState | None: ...

    async def end(self, program_id: str, now: float) -> ProgramState | None: ...

    async def gc(self, now: float) -> list[str]: ...

    async def engine_loads(self) -> dict[str, int]: ...
