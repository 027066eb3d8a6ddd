"""The whole path with real vLLM: ``autellix proxy`` → ``autellix sidecar`` → vLLM CPU (the tiny model).

Clients use the openai SDK through the proxy's client helper (program id on every request); the
sidecars' completion reports must reach the program table and never reach the client. Then one of two
engines is killed in the middle of a run: calls that had not started on it (waiting in its sidecar)
must be served by the other engine.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from autellix.proxy.client import program
from tests.polling import wait_until
from tests.real_vllm.conftest import (
    TINY_FCFS,
    TINY_FCFS_SPARE,
    VllmPool,
    metric_value,
)
from tests.services import ServiceFactory

pytestmark = pytest.mark.real_vllm


def test_the_openai_sdk_through_proxy_sidecar_and_vllm(
    vllm_pool: VllmPool, sidecar_factory: ServiceFactory, proxy_factory: ServiceFactory
) -> None:
    engine = vllm_pool.use(TINY_FCFS)[0]
    sidecar = sidecar_factory(engine.url)
    proxy = proxy_factory("--backend", f"e0={sidecar.url}")
    with program(proxy.url) as prog:
        client = prog.openai(max_retries=0, timeout=60)
        chat = client.chat.completions.create(
            model=engine.model,
            messages=[{"role": "user", "content": "plan the next step"}],
            max_tokens=6,
            extra_body={"ignore_eos": True},
        )
        assert chat.usage is not None and chat.usage.completion_tokens == 6
        stream = client.chat.completions.create(
            model=engine.model,
            messages=[{"role": "user", "content": "and stream it"}],
            max_tokens=5,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        completion = client.completions.create(
            model=engine.model, prompt="tool result: ok", max_tokens=4, extra_body={"ignore_eos": True}
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 4
        streamed_completion = list(
            client.completions.create(
                model=engine.model,
                prompt="more",
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        assert streamed_completion[-1].usage is not None
        assert streamed_completion[-1].usage.completion_tokens == 3
        # Raw bytes: no report comment and no internal header reach the client.
        with httpx.Client(timeout=60) as http:
            raw = http.post(
                proxy.url + "/v1/chat/completions",
                json={"model": engine.model, "messages": [{"role": "user", "content": "x"}], "stream": True},
                headers=prog.headers(),
            )
            plain = http.post(
                proxy.url + "/v1/completions",
                json={"model": engine.model, "prompt": "x", "max_tokens": 2},
                headers=prog.headers(),
            )
            assert b"autellix-report" not in raw.content and raw.content.endswith(b"data: [DONE]\n\n")
            assert not [name for name in plain.headers if name.lower().startswith("x-autellix")]
            state = http.get(f"{proxy.url}/v1/programs/{prog.id}").json()
    assert state["calls_completed"] == 6 and state["calls_failed"] == 0
    assert state["output_tokens"] >= 6 + 5 + 4 + 3 + 2  # from the sidecar's reports of vLLM's usage
    assert state["prompt_tokens"] > 0 and state["service_plas"] > 0
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    assert metric_value(text, "autellix_proxy_completion_reports_total", ('source="sidecar"',)) == 6


def test_calls_not_started_on_a_killed_engine_go_to_the_other(
    vllm_pool: VllmPool, sidecar_factory: ServiceFactory, proxy_factory: ServiceFactory
) -> None:
    survivor, doomed = vllm_pool.use(TINY_FCFS, TINY_FCFS_SPARE)
    # One call at a time in each engine: the others wait in the sidecars, not yet started.
    window = ("--window-mode", "fixed", "--max-in-flight", "1")
    sidecars = {
        "a": sidecar_factory(survivor.url, *window, name="sidecar-survivor"),
        "b": sidecar_factory(doomed.url, *window, name="sidecar-doomed"),
    }
    proxy = proxy_factory(
        "--backend", f"a={sidecars['a'].url}", "--backend", f"b={sidecars['b'].url}",
        "--router", "round_robin", "--health-check-interval", "0.2",
    )  # fmt: skip
    body = {
        "model": survivor.model,
        "messages": [{"role": "user", "content": "work"}],
        "max_tokens": 100,
        "ignore_eos": True,
    }
    results: list[tuple[float, int]] = []
    killed_at: list[float] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=120) as http:

            async def caller(index: int) -> None:
                for _ in range(5):
                    began = time.monotonic()
                    reply = await http.post(
                        "/v1/chat/completions", json=body, headers={"X-Program-Id": f"p{index}"}
                    )
                    results.append((began, reply.status_code))

            async def killer() -> None:
                # Kill once b has a call running and another waiting in its sidecar.
                def b_is_busy() -> bool:
                    try:
                        page = httpx.get(sidecars["b"].url + "/metrics", timeout=30).text
                    except httpx.TimeoutException:  # an overloaded machine: ask again
                        return False
                    waiting = metric_value(page, "autellix_sidecar_queue_waiting")
                    return metric_value(page, "autellix_sidecar_running") == 1 and waiting >= 1

                assert await asyncio.to_thread(wait_until, b_is_busy, 30.0, 0.01)
                killed_at.append(time.monotonic())
                await asyncio.to_thread(doomed.service.kill)

            await asyncio.gather(*(caller(i) for i in range(6)), killer())

    asyncio.run(scenario())
    kill = killed_at[0]
    failed = [began for began, status in results if status != 200]
    # At most the one call running inside the dead engine is lost; what waited in its sidecar, and
    # everything issued after the kill, is served by the survivor.
    assert len(failed) <= 1, results
    assert all(began <= kill for began in failed)
    assert all(status == 200 for began, status in results if began > kill)
    assert len(results) == 30
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    assert metric_value(text, "autellix_proxy_retries_total") >= 1
    assert wait_until(
        lambda: (
            metric_value(
                httpx.get(proxy.url + "/metrics", timeout=5).text,
                "autellix_proxy_backend_healthy",
                ('engine="b"',),
            )
            == 0
        ),
        timeout=10,
    )
