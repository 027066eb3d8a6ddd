"""Work a request hands off when it must outlive its handler (a finish after the client left, a drain).

One set per app: every task is referenced until it ends (asyncio keeps only weak references), and the
app's shutdown waits for what is left, with a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))

    async def wait(self, timeout: float) -> None:
        """Let what is left finish, for at most ``timeout`` seconds (shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


async def settle(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` and drop its outcome (it was handed off; its own callbacks handle errors)."""
    with contextlib.suppress(Exception):
        await task
