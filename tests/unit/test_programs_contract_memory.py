"""The program-table contract, run against the in-memory tables."""

from __future__ import annotations

import pytest

from autellix.proxy.programs import (
    AsyncMemoryProgramTable,
    AsyncProgramTable,
    MemoryProgramTable,
    ProgramTable,
)
from tests.contract.program_table_contract import CONTRACT_EXPIRY, ProgramTableContract


class TestAsyncMemoryProgramTable(ProgramTableContract):
    @pytest.fixture
    def program_table(self) -> AsyncProgramTable:
        return AsyncMemoryProgramTable(MemoryProgramTable(expiry=CONTRACT_EXPIRY))


def test_memory_tables_implement_the_protocols() -> None:
    sync_table: ProgramTable = MemoryProgramTable()  # mypy checks the structural match here ...
    async_table: AsyncProgramTable = AsyncMemoryProgramTable(MemoryProgramTable())
    assert isinstance(sync_table, ProgramTable)  # ... and runtime_checkable the method names here
    assert isinstance(async_table, AsyncProgramTable)
