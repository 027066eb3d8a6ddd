"""``autellix sim-engine``: the simulated engine served over vLLM's OpenAI-compatible HTTP API.

The aiohttp shell around :class:`~autellix.simulator.engine.SimEngine` (DESIGN.md §4): it validates
requests like vLLM, turns them into engine requests, streams tokens out as the
:class:`~autellix.simulator.driver.EngineDriver` steps the engine in scaled real time, and aborts a
request in the engine when its client goes away (handler cancellation on disconnect, as vLLM does).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics``, ``POST /tokenize``, ``POST /detokenize``, ``GET /version``, ``GET /server_info``; the
Responses and Messages routes are server_apis.py's.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autellix import __version__
from autellix.jsonbody import JsonBodyError, parse_json
from autellix.serving import run_service, serve_app
from autellix.simulator import tokenizer
from autellix.simulator.config import SimEngineSettings
from autellix.simulator.driver import EngineDriver, RequestHandle
from autellix.simulator.engine import EngineConfig, SimEngine
from autellix.simulator.openai_api import (
    ApiError,
    ChatCompletionRequest,
    Completion,
    StreamHeader,
    chat_response,
    completion_response,
    models_response,
    parse_request,
    sse,
)
from autellix.simulator.server_apis import add_routes
from autellix.simulator.service import (
    SERVICE,
    PreparedRequest,
    SimEngineService,
    finish_reason,
    outputs,
    running,
)
from autellix.simulator.stepmodel import StepProfile, get_profile
from autellix.simulator.validation import RequestRejected, check_content_type, encode_text

log = logging.getLogger("autellix.sim_engine")

MAX_BODY_BYTES = 64 * 1024 * 1024


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return error_response(exc)
    except RequestRejected as exc:  # text the tokenizer cannot encode (validation.py)
        return error_response(ApiError(exc.message, param=exc.param))
    except web.HTTPRequestEntityTooLarge:
        return error_response(ApiError("Request body is too large.", status=413))
    except web.HTTPException as exc:
        if exc.status >= 400:
            kind = "NotFoundError" if exc.status == 404 else "BadRequestError"
            return error_response(ApiError(exc.reason, status=exc.status, error_type=kind))
        raise
    # the body's framing broke (chunked encoding, length) or its Content-Encoding does not decode
    except (BadHttpMessage, RequestPayloadError) as exc:
        return error_response(ApiError(f"Malformed request body: {type(exc).__name__}."))
    except ConnectionResetError:
        raise  # the client is gone: nobody to answer
    except Exception:  # a bug of ours: still vLLM's error shape, and the engine keeps serving
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(
            ApiError("Internal server error.", status=500, error_type="InternalServerError")
        )


async def _generate(request: web.Request, kind: Literal["chat", "completion"]) -> web.StreamResponse:
    service = request.app[SERVICE]
    check_content_type(request.content_type)
    body = parse_request(kind, await request.read())
    prepared = service.prepare(body)
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    async with running(service, prepared, request_id) as handle:
        if prepared.stream:
            return await _stream(request, service, kind, prepared, handle)
        return await _complete(service, kind, prepared, handle)


async def _complete(
    service: SimEngineService,
    kind: Literal["chat", "completion"],
    prepared: PreparedRequest,
    handle: RequestHandle,
) -> web.Response:
    token_ids: list[int] = []
    cached = 0
    async for new_ids, _finished, cached_tokens in outputs(service, prepared, handle):
        token_ids.extend(new_ids)
        cached = cached_tokens
    done = Completion(
        request_id=handle.request_id,
        created=int(time.time()),
        model=service.settings.model_name,
        text=tokenizer.decode(token_ids),
        token_ids=token_ids,
        prompt_token_ids=prepared.prompt_token_ids,
        finish_reason=finish_reason(prepared, len(token_ids)),
        num_cached_tokens=cached,
    )
    build = chat_response if kind == "chat" else completion_response
    return web.json_response(build(done, prepared.return_token_ids))


async def _stream(
    request: web.Request,
    service: SimEngineService,
    kind: Literal["chat", "completion"],
    prepared: PreparedRequest,
    handle: RequestHandle,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    header = StreamHeader(kind, handle.request_id, int(time.time()), service.settings.model_name)
    prompt_ids = prepared.prompt_token_ids if prepared.return_token_ids else None
    if kind == "chat":
        await response.write(sse(header.role_chunk(prompt_ids)))
        prompt_ids = None
    produced = 0
    cached = 0
    async for new_ids, finished, cached_tokens in outputs(service, prepared, handle):
        cached = cached_tokens
        produced += len(new_ids)
        reason = finish_reason(prepared, produced) if finished else None
        chunk = header.delta_chunk(
            tokenizer.decode(new_ids),
            new_ids if prepared.return_token_ids else None,
            reason,
            prompt_ids,
            last=finished and not prepared.include_usage,
        )
        prompt_ids = None
        await response.write(sse(chunk))
    if prepared.include_usage:
        await response.write(sse(header.usage_chunk(len(prepared.prompt_token_ids), produced, cached)))
    await response.write(sse("[DONE]"))
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    settings = service.settings
    return web.json_response(models_response(settings.model_name, service.created, settings.max_model_len))


async def health(_request: web.Request) -> web.Response:
    return web.Response(status=200)


async def server_info(request: web.Request) -> web.Response:
    """The engine's configuration, shaped like vLLM's (dev-mode) ``/server_info`` config sections."""
    service = request.app[SERVICE]
    config = service.driver.engine.config
    return web.json_response(
        {
            "model_config": {"model": service.settings.model_name, "max_model_len": config.max_model_len},
            "scheduler_config": {
                "policy": config.policy,
                "max_num_seqs": config.max_num_seqs,
                "max_num_batched_tokens": config.max_num_batched_tokens,
            },
            "cache_config": {
                "block_size": config.block_size,
                "num_gpu_blocks": config.num_gpu_blocks,
                "enable_prefix_caching": config.enable_prefix_caching,
            },
            "simulated_profile": service.profile.name,
        }
    )


async def version(_request: web.Request) -> web.Response:
    return web.json_response({"version": f"autellix-sim-{__version__}"})


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[SERVICE].metrics.registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def tokenize(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        data = parse_json(await request.read())
    except JsonBodyError as exc:
        raise ApiError(str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError("Request body must be a JSON object")
    if isinstance(data.get("messages"), list):
        body = parse_request("chat", json.dumps({"messages": data["messages"]}).encode())
        assert isinstance(body, ChatCompletionRequest)
        ids = encode_text(
            tokenizer.apply_chat_template([{"role": m.role, "content": m.text()} for m in body.messages])
        )
    elif isinstance(data.get("prompt"), str):
        ids = encode_text(data["prompt"])
    else:
        raise ApiError("Either 'prompt' (a string) or 'messages' (a list) is required.", param="prompt")
    return web.json_response(
        {
            "count": len(ids),
            "max_model_len": service.settings.max_model_len,
            "tokens": ids,
            "token_strs": None,
        }
    )


async def detokenize(request: web.Request) -> web.Response:
    try:
        data = parse_json(await request.read())
    except JsonBodyError as exc:
        raise ApiError(str(exc)) from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tokens
    ):
        raise ApiError("'tokens' must be a list of integers.", param="tokens")
    return web.json_response({"prompt": tokenizer.decode(tokens)})


def build_engine(settings: SimEngineSettings) -> tuple[SimEngine, StepProfile]:
    profile = get_profile(settings.profile)
    config = EngineConfig(
        num_gpu_blocks=settings.num_gpu_blocks or profile.num_gpu_blocks,
        max_num_seqs=settings.max_num_seqs or profile.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens or profile.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
        enable_prefix_caching=settings.prefix_caching,
        policy=settings.scheduling_policy,
        seed=settings.seed,
    )
    return SimEngine(config, profile), profile


def create_app(settings: SimEngineSettings) -> web.Application:
    """The aiohttp application; the engine's step loop lives for the app's lifetime."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors_middleware])

    async def engine_lifetime(app: web.Application) -> AsyncIterator[None]:
        engine, profile = build_engine(settings)
        driver = EngineDriver(engine, settings.time_scale)
        app[SERVICE] = SimEngineService(settings, profile, driver)
        driver.start()
        yield
        await driver.stop()

    app.cleanup_ctx.append(engine_lifetime)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    add_routes(app, settings.enable_responses_store)
    return app


def protocol_error_body(status: int, message: str) -> dict[str, Any]:
    """aiohttp's own answers (a malformed request, a head over its limits) in vLLM's shape."""
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return ApiError(message, status=status, error_type=kind).body()


async def serve(settings: SimEngineSettings) -> None:
    app = create_app(settings)

    def started(port: int) -> None:
        log.info(
            "simulated engine (%s, policy %s, time scale %g) listening on http://%s:%d",
            app[SERVICE].profile.name,
            settings.scheduling_policy,
            settings.time_scale,
            settings.host,
            port,
        )

    await serve_app(
        app, "sim-engine", settings.host, settings.port, on_started=started, error_body=protocol_error_body
    )


def run(settings: SimEngineSettings) -> int:
    return run_service(
        "sim-engine", settings.host, settings.port, settings.log_level, lambda: serve(settings)
    )
