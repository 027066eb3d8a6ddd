"""The simulated engine's Responses and Messages routes (the aiohttp shell; shapes in responses_api.py
and messages_api.py, the request path in service.py).

Routes: ``POST /v1/responses``, ``GET /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel``,
``POST /v1/messages``, ``POST /v1/messages/count_tokens``. Both generation routes run through the same
engine as chat (a Messages call is a chat call inside, as in vLLM); a client that goes away aborts its
request. A background response (``background: true``, store on) runs in a task of the app's; cancelling
it aborts that task and its engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from aiohttp import web

from autellix.simulator import messages_api, responses_api, tokenizer
from autellix.simulator.openai_api import ApiError
from autellix.simulator.request_body import parse_body
from autellix.simulator.responses_api import ResponsesRequest, ResponseStore, StoredResponse
from autellix.simulator.service import (
    SERVICE,
    PreparedRequest,
    SimEngineService,
    finish_reason,
    outputs,
    running,
)

RESPONSES = web.AppKey("responses", ResponseStore)
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
BACKGROUND = web.AppKey("background_responses", dict[str, asyncio.Task[None]])


def _hex() -> str:
    return uuid.uuid4().hex[:16]


async def _generated(
    service: SimEngineService, prepared: PreparedRequest, handle: Any
) -> tuple[list[int], int]:
    ids: list[int] = []
    cached = 0
    async for new_ids, _finished, cached_tokens in outputs(service, prepared, handle):
        ids.extend(new_ids)
        cached = cached_tokens
    return ids, cached


# ----- Responses ----------------------------------------------------------------------------------------


def _conversation(store: ResponseStore, body: ResponsesRequest) -> list[dict[str, str]]:
    previous: StoredResponse | None = None
    if body.previous_response_id is not None:
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise responses_api.not_found(body.previous_response_id)
    history = previous.conversation if previous is not None else []
    return [*history, *responses_api.input_messages(body)]


async def create_response(request: web.Request) -> web.StreamResponse:
    service, store = request.app[SERVICE], request.app[RESPONSES]
    body = responses_api.parse_request(await request.read())
    service.check_model(body.model)
    stored = bool(body.store) and store.enabled  # responses_api rule 2: store is off unless enabled
    if body.background and not stored:
        raise ApiError(
            "This vLLM engine does not support `store=True` and therefore does not support the background "
            "mode. To enable these features, set --enable-responses-store.",
            param="background",
        )
    if body.background and body.stream:
        raise ApiError("The simulated engine does not stream background responses.", param="stream")
    conversation = _conversation(store, body)
    prepared = service.prepare_prompt(
        service.chat_prompt_ids(conversation),
        body.max_output_tokens,
        ignore_eos=body.ignore_eos,
        priority=body.priority,
        stream=bool(body.stream),
        max_tokens_param="max_output_tokens",
    )
    response_id, message_id, created = f"resp_{_hex()}", f"msg_{_hex()}", int(time.time())
    model = service.settings.model_name

    def shaped(
        status: responses_api.Status, text: str | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return responses_api.response_object(
            body, response_id, created, model, status, prepared.max_tokens, text, message_id, usage
        )

    def final(ids: list[int], cached: int) -> dict[str, Any]:
        status: responses_api.Status = "incomplete" if len(ids) >= prepared.max_tokens else "completed"
        used = responses_api.usage(len(prepared.prompt_token_ids), len(ids), cached)
        response = shaped(status, tokenizer.decode(ids), used)
        if stored:
            text = tokenizer.decode(ids)
            store.put(response, [*conversation, {"role": "assistant", "content": text}])
        return response

    if body.background:
        queued = shaped("queued", None, None)
        store.put(queued, conversation)
        work = _background(service, store, prepared, response_id, final)
        task = asyncio.get_running_loop().create_task(work)
        tasks = request.app[BACKGROUND]
        tasks[response_id] = task
        task.add_done_callback(lambda _task: tasks.pop(response_id, None))
        return web.json_response(queued)
    async with running(service, prepared, response_id) as handle:
        if not prepared.stream:
            ids, cached = await _generated(service, prepared, handle)
            return web.json_response(final(ids, cached))
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        events = responses_api.EventStream(message_id)
        await response.write(events.opening(shaped("in_progress", None, None)))
        ids, cached = [], 0
        async for new_ids, _finished, cached_tokens in outputs(service, prepared, handle):
            ids.extend(new_ids)
            cached = cached_tokens
            await response.write(events.delta(tokenizer.decode(new_ids)))
        await response.write(events.closing(final(ids, cached)))
        await response.write_eof()
        return response


async def _background(
    service: SimEngineService, store: ResponseStore, prepared: PreparedRequest, response_id: str, final: Any
) -> None:
    entry = store.get(response_id)
    if entry is not None:
        entry.response["status"] = "in_progress"
    async with running(service, prepared, response_id) as handle:
        ids, cached = await _generated(service, prepared, handle)
    entry = store.get(response_id)
    if entry is None or entry.response["status"] != "cancelled":
        final(ids, cached)


async def get_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    entry = request.app[RESPONSES].get(response_id)
    if entry is None:
        raise responses_api.not_found(response_id)
    return web.json_response(entry.response)


async def cancel_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    entry = request.app[RESPONSES].get(response_id)
    if entry is None:
        raise responses_api.not_found(response_id)
    if entry.response["status"] not in ("queued", "in_progress"):
        raise ApiError("Cannot cancel a synchronous response.", error_type="invalid_request_error",
                       param="response_id")  # fmt: skip
    entry.response["status"] = "cancelled"
    task = request.app[BACKGROUND].get(response_id)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return web.json_response(entry.response)


# ----- Messages -----------------------------------------------------------------------------------------


def _anthropic(error: ApiError) -> web.Response:
    return web.json_response(messages_api.anthropic_error(error), status=error.status)


async def create_message(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    body = parse_body(await request.read(), messages_api.MessagesRequest)
    try:  # messages_api rule 2: the handler's errors in Anthropic's envelope
        service.check_model(body.model)
        prepared = service.prepare_prompt(
            service.chat_prompt_ids(messages_api.chat_messages(body)),
            body.max_tokens,
            ignore_eos=body.ignore_eos,
            stream=bool(body.stream),
            max_tokens_param="max_completion_tokens",
        )
    except ApiError as exc:
        return _anthropic(exc)
    message_id, model = f"chatcmpl-{_hex()}", service.settings.model_name
    prompt = len(prepared.prompt_token_ids)
    async with running(service, prepared, message_id) as handle:
        if not prepared.stream:
            ids, cached = await _generated(service, prepared, handle)
            reason = finish_reason(prepared, len(ids))
            used = messages_api.usage(prompt, len(ids), cached)
            text = tokenizer.decode(ids)
            return web.json_response(messages_api.message_object(message_id, model, text, reason, used))
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(messages_api.stream_opening(message_id, model, prompt))
        produced, cached = 0, 0
        async for new_ids, _finished, cached_tokens in outputs(service, prepared, handle):
            produced += len(new_ids)
            cached = cached_tokens
            await response.write(messages_api.stream_delta(tokenizer.decode(new_ids)))
        used = messages_api.usage(prompt, produced, cached)
        await response.write(messages_api.stream_closing(finish_reason(prepared, produced), used))
        await response.write_eof()
        return response


async def count_tokens(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = parse_body(await request.read(), messages_api.CountTokensRequest)
    try:
        service.check_model(body.model)
    except ApiError as exc:
        return _anthropic(exc)
    tokens = len(service.chat_prompt_ids(messages_api.chat_messages(body)))
    return web.json_response(messages_api.count_tokens_response(tokens))


def add_routes(app: web.Application, store_enabled: bool) -> None:
    app[RESPONSES] = ResponseStore(enabled=store_enabled)
    app[BACKGROUND] = {}
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
    app.router.add_post("/v1/messages", create_message)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
