"""The program table: per-program service, wait, pin and in-flight calls (Autellix paper §4).

Pure core: nothing here imports asyncio, aiohttp, redis, time or socket; time is passed in as ``now``.
A Redis-backed table belongs in its own module and must not be imported from here, so that importing
the package stays free of IO.
"""

from .interface import AsyncProgramTable, ProgramTable
from .memory import AsyncMemoryProgramTable, MemoryProgramTable
from .model import (
    CallFinish,
    CallStart,
    CallStartResult,
    InFlightCall,
    ProgramExpiry,
    ProgramState,
    StoredReply,
)
from .rules import (
    FinishOutcome,
    StartOutcome,
    apply_call_finish,
    apply_call_start,
    finished_service,
    in_flight_engines,
    is_expired,
    measured_seconds,
    new_program,
    next_load,
)

__all__ = [
    "AsyncMemoryProgramTable",
    "AsyncProgramTable",
    "CallFinish",
    "CallStart",
    "CallStartResult",
    "FinishOutcome",
    "InFlightCall",
    "MemoryProgramTable",
    "ProgramExpiry",
    "ProgramState",
    "ProgramTable",
    "StartOutcome",
    "StoredReply",
    "apply_call_finish",
    "apply_call_start",
    "finished_service",
    "in_flight_engines",
    "is_expired",
    "measured_seconds",
    "new_program",
    "next_load",
]
