"""The Responses and Messages APIs through real processes: the official ``openai`` and ``anthropic`` SDKs
-> proxy replicas (Redis program table) -> sidecars -> simulated engines that store responses.

A Responses chain (``previous_response_id``, no program header) is one program, on the engine that
stored its replies, through either replica; a Messages call's ``metadata.user_id`` names its program;
token counts and errors come in each API's words."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from functools import partial

import anthropic
import httpx
import openai
import pytest
import redis

from autellix.launch import ServiceProcess
from tests.integration.conftest import SidecarFactory, SimEngineFactory
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]

MODEL = "sim-llama"


@pytest.fixture
def stack(
    sim_engine_factory: SimEngineFactory,
    sidecar_factory: SidecarFactory,
    proxy_factory: Callable[..., ServiceProcess],
    redis_url: str,
) -> Iterator[tuple[list[ServiceProcess], str]]:
    backends = []
    for n in range(2):
        engine = sim_engine_factory("--time-scale", "0.01", "--enable-responses-store", name=f"engine{n}")
        sidecar = sidecar_factory(engine.url, "--engine-kind", "sim", name=f"sidecar{n}")
        backends += ["--backend", f"e{n}={sidecar.url}"]
    prefix = "apis" + secrets.token_hex(3)
    flags = [*backends, "--redis-url", redis_url, "--redis-key-prefix", prefix, "--router", "round_robin"]
    proxies = [proxy_factory(*flags, name=f"proxy{n}") for n in range(2)]
    for proxy in proxies:
        assert wait_until(partial(_ready, proxy.url), timeout=30)
    yield proxies, prefix


def _ready(url: str) -> bool:
    return httpx.get(url + "/ready", timeout=5).status_code == 200


def programs(redis_url: str, prefix: str) -> dict[str, dict[bytes, bytes]]:
    """Every program hash in the table, by program id (redis_table.py rule 1)."""
    client = redis.Redis.from_url(redis_url)
    out: dict[str, dict[bytes, bytes]] = {}
    for key in client.keys(f"{prefix}:prog:*"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        fields: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        out[name.split("{", 1)[1].rstrip("}")] = fields
    return out


def test_a_responses_chain_is_one_program_on_the_engine_that_stored_it(
    stack: tuple[list[ServiceProcess], str], redis_url: str
) -> None:
    proxies, prefix = stack
    clients = [openai.OpenAI(base_url=p.url + "/v1", api_key="none", max_retries=0) for p in proxies]
    first = clients[0].responses.create(model=MODEL, input="Plan a trip.", max_output_tokens=8)
    assert first.status in ("completed", "incomplete") and first.usage is not None
    assert first.output_text and first.usage.output_tokens > 0
    previous = first.id
    texts = [first.output_text]
    for turn in range(4):  # alternate replicas and streaming: the chain must stay one program
        client = clients[(turn + 1) % 2]
        final: openai.types.responses.Response
        if turn % 2:
            with client.responses.stream(
                model=MODEL, input=f"And step {turn}?", max_output_tokens=6, previous_response_id=previous
            ) as stream:
                kinds = [event.type for event in stream]
                final = stream.get_final_response()
            assert kinds[:2] == ["response.created", "response.in_progress"]
            assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
        else:
            final = client.responses.create(
                model=MODEL, input=f"And step {turn}?", max_output_tokens=6, previous_response_id=previous
            )
        assert final.previous_response_id == previous
        texts.append(final.output_text)
        previous = final.id
    # the engine that stored the first reply continued every one: its input grew with the history
    fetched = clients[1].responses.retrieve(previous)
    assert fetched.id == previous and fetched.output_text == texts[-1]
    table = programs(redis_url, prefix)
    (state,) = table.values()  # one program for the whole chain
    assert int(state[b"started"]) == int(state[b"completed"]) == 5
    assert int(state[b"otok"]) > 0 and float(state[b"plas"]) > 0  # service and tokens from each reply
    with pytest.raises(openai.NotFoundError):
        clients[0].responses.retrieve("resp_unknown")
    with pytest.raises(openai.BadRequestError):  # a synchronous response cannot be cancelled (vLLM's words)
        clients[0].responses.cancel(previous)


def test_messages_through_the_anthropic_sdk_name_their_program_by_user_id(
    stack: tuple[list[ServiceProcess], str], redis_url: str
) -> None:
    proxies, prefix = stack
    client = anthropic.Anthropic(base_url=proxies[0].url, api_key="none", max_retries=0)
    user = "user_abc_account_def_session_0f3a"
    reply = client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hello"}], metadata={"user_id": user}
    )
    assert reply.type == "message" and reply.content[0].type == "text" and reply.usage.output_tokens > 0
    with client.messages.stream(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Again"}], metadata={"user_id": user}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "text" and text == block.text and final.stop_reason in ("max_tokens", "end_turn")
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    assert counted.input_tokens > 0
    table = programs(redis_url, prefix)
    assert int(table[user][b"completed"]) == 2 and int(table[user][b"ptok"]) > 0
    bad = {"model": MODEL, "max_tokens": "x", "messages": [{"role": "user", "content": "a"}]}
    with pytest.raises(anthropic.BadRequestError) as caught:  # the proxy's own check, in Anthropic's shape
        client.post("/v1/messages", cast_to=object, body=bad)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'max_tokens' must be an integer, got str"},
    }
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=4, messages=[{"role": "user", "content": "a"}])
    raw = httpx.post(proxies[1].url + "/v1/messages", content=b"{oops", timeout=10)
    assert raw.status_code == 400 and json.loads(raw.text)["type"] == "error"
