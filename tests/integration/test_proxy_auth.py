"""API keys with real processes on loopback: the ``openai`` SDK through a proxy that checks keys, in
front of a sidecar that checks the proxy's backend key, in front of a simulated engine; and, with a
recording engine, which credential each hop sends (the client's key never travels past the proxy, the
engine key reaches the engine on calls and on probes)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from autellix.launch import ServiceProcess, autellix_command, free_port
from autellix.proxy.client import program
from tests.integration.conftest import SidecarFactory, SimEngineFactory, metric_value
from tests.integration.recording import RecordingEngine

pytestmark = pytest.mark.integration

ENGINE_FLAGS = ("--profile", "unit", "--time-scale", "0.01")
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def wait_ready(url: str, timeout: float = 15.0) -> None:
    """The proxy's /ready: a backend passed its checks (and its model list is known)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready")


def test_the_openai_sdk_through_a_proxy_and_a_sidecar_that_check_keys(
    sim_engine_factory: SimEngineFactory,
    sidecar_factory: SidecarFactory,
    proxy_factory: Callable[..., ServiceProcess],
) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim", "--api-key", "sidecar-key")
    proxy = proxy_factory(
        "--backend",
        f"e0={sidecar.url}",
        "--api-key",
        "old-key",
        "--api-key",
        "new-key",
        "--backend-api-key",
        "sidecar-key",
        "--health-check-interval",
        "0.2",
    )
    wait_ready(proxy.url)
    extra = {"ignore_eos": True}
    reply = sdk(proxy.url, "old-key").chat.completions.create(
        model="sim-llama", messages=MESSAGES, max_tokens=3, extra_body=extra
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    stream = sdk(proxy.url, "new-key").chat.completions.create(  # rotation: both keys work
        model="sim-llama", messages=MESSAGES, max_tokens=4, stream=True, extra_body=extra
    )
    assert sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content) == 4

    for wrong in ("wrong-key", "sidecar-key"):  # the sidecar's key is no client key of the proxy
        with pytest.raises(openai.AuthenticationError) as info:
            sdk(proxy.url, wrong).chat.completions.create(model="sim-llama", messages=MESSAGES, max_tokens=1)
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        anonymous = http.post("/v1/chat/completions", json={"model": "sim-llama", "messages": MESSAGES})
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models").status_code == 401
        assert http.get("/health").status_code == 200 and http.get("/ready").status_code == 200
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert metric_value(metrics.text, "autellix_proxy_requests_total", ['status="401"']) >= 3

    # the client helper sends the key on POST/DELETE /v1/programs and to the SDK clients it makes
    with program(proxy.url, api_key="new-key") as prog:
        reply = prog.openai(max_retries=0).chat.completions.create(
            model="sim-llama", messages=MESSAGES, max_tokens=2, extra_body=extra
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 2
        with httpx.Client(base_url=proxy.url, timeout=10) as http:
            state = http.get(f"/v1/programs/{prog.id}", headers={"Authorization": "Bearer new-key"})
            assert state.status_code == 200 and state.json()["calls_completed"] == 1
    with pytest.raises(httpx.HTTPStatusError), program(proxy.url, api_key="wrong-key"):
        pass

    with httpx.Client(base_url=sidecar.url, timeout=10) as http:  # only the proxy can reach the sidecar
        direct = http.post("/v1/chat/completions", json={"model": "sim-llama", "messages": MESSAGES})
        assert direct.status_code == 401 and direct.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models", headers={"Authorization": "Bearer old-key"}).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": "Bearer sidecar-key"}).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert http.get(path).status_code == 200, path


def test_the_client_key_stops_at_the_proxy_and_the_engine_key_reaches_the_engine(
    sidecar_factory: SidecarFactory, proxy_factory: Callable[..., ServiceProcess]
) -> None:
    with RecordingEngine() as engine:
        sidecar = sidecar_factory(
            engine.url, "--engine-kind", "vllm", "--engine-api-key", "engine-key", "--probe-interval", "0.05"
        )
        proxy = proxy_factory(
            "--backend", f"e0={sidecar.url}", "--api-key", "client-key", "--health-check-interval", "0.2"
        )
        wait_ready(proxy.url)
        client = sdk(proxy.url, "client-key")
        assert (
            client.chat.completions.create(model="rec", messages=MESSAGES).choices[0].message.content == "k"
        )
        chunks = list(client.chat.completions.create(model="rec", messages=MESSAGES, stream=True))
        assert any(chunk.choices and chunk.choices[0].delta.content == "k" for chunk in chunks)
        # the caller's own Authorization is replaced too, not only the missing one filled in
        with httpx.Client(base_url=sidecar.url, timeout=10) as http:
            direct = http.post(
                "/v1/chat/completions",
                json={"model": "rec", "messages": MESSAGES},
                headers={"Authorization": "Bearer someone-else"},
            )
            assert direct.status_code == 200
    assert engine.authorizations("/v1/chat/completions") == ["Bearer engine-key"] * 3
    for path in ("/metrics", "/server_info", "/health", "/v1/models"):  # probes, detection, /ready, models
        sent = engine.authorizations(path)
        assert sent and set(sent) == {"Bearer engine-key"}, (path, sent)
    assert not any("client-key" in json.dumps(headers) for _, headers in engine.seen)


def test_keys_from_the_environment_and_a_file_and_an_open_proxy_passes_the_clients_key(
    proxy_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text("# mounted from a Secret\nfile-key\n")
    with RecordingEngine() as engine:
        port = free_port()
        flags = ["--host", "127.0.0.1", "--port", str(port), "--backend", f"e0={engine.url}"]
        flags += ["--api-key-file", str(keys), "--health-check-interval", "0.2"]
        guarded = ServiceProcess(
            name="proxy-env",
            args=autellix_command("proxy", flags),
            url=f"http://127.0.0.1:{port}",
            log_path=tmp_path / "proxy-env.log",
            env={"AUTELLIX_API_KEY": "env-key-1,env-key-2"},
        ).start()
        try:
            wait_ready(guarded.url)
            for key in ("env-key-1", "env-key-2", "file-key"):
                assert sdk(guarded.url, key).chat.completions.create(model="rec", messages=MESSAGES).choices
            with pytest.raises(openai.AuthenticationError):
                sdk(guarded.url, "not-listed").chat.completions.create(model="rec", messages=MESSAGES)
        finally:
            guarded.stop()
        log = guarded.log_path.read_text()
        assert "API keys: 3 accepted" in log
        assert not any(key in log for key in ("env-key-1", "env-key-2", "file-key"))
        assert engine.authorizations("/v1/chat/completions") == [None] * 3

        open_proxy = proxy_factory("--backend", f"e0={engine.url}", "--health-check-interval", "0.2")
        wait_ready(open_proxy.url)
        sdk(open_proxy.url, "engine-checks-this").chat.completions.create(model="rec", messages=MESSAGES)
        assert engine.authorizations("/v1/chat/completions")[-1] == "Bearer engine-checks-this"
        assert "the proxy is open" in open_proxy.log_path.read_text()
