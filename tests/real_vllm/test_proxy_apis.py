"""The Responses and Messages APIs on the whole path with real vLLM: the official ``openai`` and
``anthropic`` SDKs -> ``autellix proxy`` -> ``autellix sidecar`` -> vLLM CPU (the tiny model, storing
responses). A Responses chain without any program header is one program in the proxy's table, and a
Messages call's ``metadata.user_id`` names its program; tokens come from each API's usage."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.real_vllm.conftest import TINY_FCFS, VllmPool
from tests.services import ServiceFactory

pytestmark = pytest.mark.real_vllm


def program_state(proxy_url: str, program_id: str) -> dict[str, object]:
    reply = httpx.get(f"{proxy_url}/v1/programs/{program_id}", timeout=30)
    assert reply.status_code == 200, reply.text
    state: dict[str, object] = reply.json()
    return state


def test_a_responses_chain_and_messages_through_proxy_sidecar_and_vllm(
    vllm_pool: VllmPool, sidecar_factory: ServiceFactory, proxy_factory: ServiceFactory
) -> None:
    engine = vllm_pool.use(TINY_FCFS)[0]
    sidecar = sidecar_factory(engine.url)
    # the replica id fixes the name the proxy gives a program without an id: call-<replica>-<n>
    proxy = proxy_factory("--backend", f"e0={sidecar.url}", "--replica-id", "rv")
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="none", max_retries=0, timeout=60)
    first = client.responses.create(
        model=engine.model, input="plan a trip", max_output_tokens=5, extra_body={"ignore_eos": True}
    )
    assert first.usage is not None and first.usage.output_tokens == 5
    second = client.responses.create(
        model=engine.model,
        input="and the next step",
        max_output_tokens=4,
        previous_response_id=first.id,
        extra_body={"ignore_eos": True},
    )
    assert second.previous_response_id == first.id
    with client.responses.stream(
        model=engine.model,
        input="stream the last one",
        max_output_tokens=3,
        previous_response_id=second.id,
        extra_body={"ignore_eos": True},
    ) as stream:
        kinds = [event.type for event in stream]
        third = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert third.usage is not None and third.usage.input_tokens > first.usage.input_tokens  # history
    state = program_state(proxy.url, "call-rv-0")  # the chain's program, named at its first call
    assert (state["calls_started"], state["calls_completed"], state["output_tokens"]) == (3, 3, 12)
    assert client.responses.retrieve(third.id).id == third.id

    messages = anthropic.Anthropic(base_url=proxy.url, api_key="none", max_retries=0, timeout=60)
    for _turn in range(2):
        reply = messages.messages.create(
            model=engine.model,
            max_tokens=4,
            messages=[{"role": "user", "content": "hello"}],
            metadata={"user_id": "user_rv_session_1"},
            extra_body={"ignore_eos": True},
        )
        assert reply.usage.output_tokens == 4
    with messages.messages.stream(
        model=engine.model,
        max_tokens=3,
        messages=[{"role": "user", "content": "stream"}],
        metadata={"user_id": "user_rv_session_1"},
        extra_body={"ignore_eos": True},
    ) as streamed:
        final = streamed.get_final_message()
    assert final.usage.output_tokens == 3
    state = program_state(proxy.url, "user_rv_session_1")
    assert (state["calls_completed"], state["output_tokens"]) == (3, 11)
    assert int(str(state["prompt_tokens"])) > 0
    counted = messages.messages.count_tokens(model=engine.model, messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens > 0
