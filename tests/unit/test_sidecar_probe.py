"""The sidecar's engine load probe against an engine whose /metrics answers slowly (vLLM on a busy CPU)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from autellix.engine_adapters.config import SidecarSettings
from autellix.engine_adapters.sidecar import Sidecar

METRICS = "vllm:num_requests_running 3\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.25\n"


@pytest.fixture
async def slow_engine() -> AsyncIterator[Callable[[float], str]]:
    """An engine whose /metrics takes ``delay`` seconds (set per test through the returned setter)."""
    delay = [0.0]

    async def metrics(_request: web.Request) -> web.Response:
        await asyncio.sleep(delay[0])
        return web.Response(text=METRICS)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()

    def configure(seconds: float) -> str:
        delay[0] = seconds
        return str(server.make_url("")).rstrip("/")

    yield configure
    await server.close()


def failures(sidecar: Sidecar) -> float:
    return sidecar.metrics.registry.get_sample_value("autellix_sidecar_probe_failures_total") or 0.0


@pytest.mark.parametrize(
    ("probe_timeout", "delay", "ok"),
    [
        (None, 0.0, True),  # the default: max(1 s, 5 x probe_interval)
        (0.2, 0.4, False),  # the answer comes after the limit: a failed probe, the window holds
        (1.5, 0.4, True),  # a limit above the engine's slowness: the probe counts
    ],
)
async def test_probe_timeout_decides_whether_a_slow_metrics_answer_counts(
    slow_engine: Callable[[float], str], probe_timeout: float | None, delay: float, ok: bool
) -> None:
    url = slow_engine(delay)
    settings = SidecarSettings.model_validate(
        {"engine_url": url, "engine_kind": "vllm", "engine_priority": "off", "probe_timeout": probe_timeout}
    )
    sidecar = Sidecar(settings)
    await sidecar.client.start()
    try:
        await sidecar.probe_once()
    finally:
        await sidecar.client.close()
    assert (failures(sidecar) == 0) is ok
    load = sidecar.gate.stats().engine_load
    assert (load is not None and load.running == 3 and load.waiting == 1) is ok


def test_probe_timeout_is_optional_and_positive() -> None:
    assert SidecarSettings.model_validate({"engine_url": "http://127.0.0.1:1"}).probe_timeout is None
    with pytest.raises(ValueError, match="probe_timeout"):
        SidecarSettings.model_validate({"engine_url": "http://127.0.0.1:1", "probe_timeout": 0})
