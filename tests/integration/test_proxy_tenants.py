"""Tenants with real processes: two API keys through a proxy (in-memory table, and Redis) in front of a
sidecar and a simulated engine; then signed ids required, with the ``openai`` SDK and raw HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from autellix.auth import key_id
from autellix.launch import ServiceProcess
from tests.integration.conftest import RedisServer, SidecarFactory, SimEngineFactory
from tests.integration.test_proxy_auth import sdk, wait_ready

pytestmark = pytest.mark.integration

ENGINE_FLAGS = ("--profile", "unit", "--time-scale", "0.01")
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
EXTRA = {"ignore_eos": True}
LONGEST = "p" * 256  # the longest id a client may name: its namespaced form still reaches the sidecar


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def call(url: str, key: str, program: str, tokens: int = 2) -> None:
    reply = sdk(url, key).chat.completions.create(
        model="sim-llama",
        messages=MESSAGES,
        max_tokens=tokens,
        extra_body=EXTRA,
        extra_headers={"X-Program-Id": program},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == tokens


@pytest.mark.parametrize("table", ["memory", "redis"])
def test_two_keys_never_see_or_touch_each_others_programs(
    table: str,
    sim_engine_factory: SimEngineFactory,
    sidecar_factory: SidecarFactory,
    proxy_factory: Callable[..., ServiceProcess],
    redis_server: RedisServer,
) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim", "--api-key", "sidecar-key")
    prefix = f"tenants-{table}-{redis_server.port}"
    extra = ["--redis-url", redis_server.url, "--redis-key-prefix", prefix] if table == "redis" else []
    proxy = proxy_factory(
        "--backend", f"e0={sidecar.url}", "--api-key", "key-a", "--api-key", "key-b",
        "--backend-api-key", "sidecar-key", "--health-check-interval", "0.2", *extra,
    )  # fmt: skip
    wait_ready(proxy.url)
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        assert http.post("/v1/programs", json={"id": "shared"}, headers=auth("key-a")).status_code == 201
        for _ in range(3):
            call(proxy.url, "key-a", "shared", tokens=4)
        state_a = http.get("/v1/programs/shared", headers=auth("key-a")).json()
        assert state_a["id"] == "shared" and state_a["calls_completed"] == 3
        for method in ("GET", "DELETE"):
            reply = http.request(method, "/v1/programs/shared", headers=auth("key-b"))
            assert reply.status_code == 404 and reply.json()["error"]["code"] == "program_not_found"
        # B names A's program (and its table id): B's calls run in B's own programs
        call(proxy.url, "key-b", "shared")
        call(proxy.url, "key-b", f"{key_id('key-a')}/shared")
        call(proxy.url, "key-b", LONGEST)
        after = http.get("/v1/programs/shared", headers=auth("key-a")).json()
        assert after["calls_completed"] == 3 and after["service_plas"] == state_a["service_plas"]
        assert after["calls_started"] == 3
        state_b = http.get("/v1/programs/shared", headers=auth("key-b")).json()
        assert state_b["calls_completed"] == 1
        assert state_b["service_plas"] < state_a["service_plas"]  # no priority borrowed from A's
        assert http.get(f"/v1/programs/{LONGEST}", headers=auth("key-b")).json()["calls_completed"] == 1
        assert http.get(f"/v1/programs/{LONGEST}", headers=auth("key-a")).status_code == 404
        if table == "redis":
            keys = redis_server.command("KEYS", f"{prefix}:prog:*").decode()
            assert f"{{{key_id('key-a')}/shared}}" in keys and f"{{{key_id('key-b')}/shared}}" in keys
            assert "{shared}" not in keys
        assert http.delete("/v1/programs/shared", headers=auth("key-a")).status_code == 200
        assert http.get("/v1/programs/shared", headers=auth("key-b")).status_code == 200


def test_signed_ids_required_with_two_keys_and_redis(
    sim_engine_factory: SimEngineFactory,
    sidecar_factory: SidecarFactory,
    proxy_factory: Callable[..., ServiceProcess],
    redis_server: RedisServer,
) -> None:
    engine = sim_engine_factory(*ENGINE_FLAGS)
    sidecar = sidecar_factory(engine.url, "--engine-kind", "sim")
    secret = ["--program-id-secret", "an-example-secret-of-32-bytes!!!"]
    common = ["--backend", f"e0={sidecar.url}", "--api-key", "key-a", "--api-key", "key-b",
              "--redis-url", redis_server.url, "--redis-key-prefix", f"signed-{redis_server.port}",
              "--health-check-interval", "0.2", "--require-signed-ids", *secret]  # fmt: skip
    first, second = proxy_factory(*common, name="proxy-1"), proxy_factory(*common, name="proxy-2")
    wait_ready(first.url)
    wait_ready(second.url)
    with httpx.Client(timeout=10) as http:
        signed = http.post(first.url + "/v1/programs", headers=auth("key-a")).json()["id"]
        call(second.url, "key-a", signed)  # the other replica shares the secret and the table
        assert (
            http.get(f"{first.url}/v1/programs/{signed}", headers=auth("key-a")).json()["calls_completed"]
            == 1
        )
        for key, program in [
            ("key-a", signed.rpartition(".")[0]),  # unsigned
            ("key-a", signed[:-1] + ("0" if signed[-1] != "0" else "1")),  # forged
            ("key-b", signed),  # signed for another key
        ]:
            with pytest.raises(openai.PermissionDeniedError) as info:
                call(first.url, key, program)
            assert info.value.status_code == 403 and info.value.code == "unsigned_program_id"
        unsigned = http.get(f"{first.url}/v1/programs/{signed.rpartition('.')[0]}", headers=auth("key-a"))
        assert unsigned.status_code == 403
        anonymous = sdk(first.url, "key-b").chat.completions.create(
            model="sim-llama", messages=MESSAGES, max_tokens=1, extra_body=EXTRA
        )
        assert anonymous.usage is not None  # no id: a program of its own, still served
