"""The client helper's headers: program id always, thread inside ``thread()`` blocks, per task."""

from __future__ import annotations

import asyncio

from autellix.proxy.client import Program


def test_headers_carry_the_program_and_the_current_thread() -> None:
    prog = Program("p1", "http://proxy:8080/v1/")
    assert prog.base_url == "http://proxy:8080/v1"
    assert prog.headers() == {"X-Program-Id": "p1"}
    with prog.thread("a"):
        assert prog.headers() == {"X-Program-Id": "p1", "X-Thread-Id": "a"}
        with prog.thread("b"):
            assert prog.current_thread() == "b"
        assert prog.current_thread() == "a"
    assert prog.current_thread() is None
    assert prog.headers("explicit") == {"X-Program-Id": "p1", "X-Thread-Id": "explicit"}


def test_a_thread_of_one_program_does_not_leak_into_another() -> None:
    first, second = Program("p1", "http://x"), Program("p2", "http://x")
    with first.thread("a"):
        assert second.current_thread() is None


def test_parallel_tasks_keep_their_own_threads() -> None:
    prog = Program("p1", "http://x")
    seen: dict[str, str | None] = {}

    async def branch(name: str) -> None:
        with prog.thread(name):
            await asyncio.sleep(0)  # interleave the branches
            seen[name] = prog.headers().get("X-Thread-Id")

    async def main() -> None:
        await asyncio.gather(*(branch(f"t{i}") for i in range(4)))

    asyncio.run(main())
    assert seen == {f"t{i}": f"t{i}" for i in range(4)}


def test_the_http_client_hook_adds_the_headers() -> None:
    prog = Program("p1", "http://x")
    client = prog.http_client()
    request = client.build_request("POST", "http://x/v1/chat/completions")
    with prog.thread("t9"):
        for hook in client.event_hooks["request"]:
            hook(request)
    assert request.headers["X-Program-Id"] == "p1" and request.headers["X-Thread-Id"] == "t9"
    client.close()
