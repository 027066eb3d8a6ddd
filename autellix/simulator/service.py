"""The simulated engine's request path below HTTP: validated requests become engine requests, and the
engine's outputs come back step by step (shared by every API the server speaks: chat and completions in
server.py, Responses and Messages in server_apis.py).

:meth:`SimEngineService.prepare_prompt` applies vLLM 0.32's length checks in vLLM's order (an output
longer than the model, then a prompt longer than the model, else the output is clipped to the context
left) and draws the output length (exactly ``max_tokens`` with ``ignore_eos``, else geometric with
mean ``--mean-output-tokens``, deterministic per seed and prompt); :func:`outputs` yields each step's
new tokens and records the latency metrics when the request ends.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from autellix.simulator import tokenizer
from autellix.simulator.config import SimEngineSettings
from autellix.simulator.driver import EngineDriver, RequestHandle
from autellix.simulator.engine import SimRequest
from autellix.simulator.metrics import SimEngineMetrics
from autellix.simulator.openai_api import ApiError, ChatCompletionRequest, CompletionRequest
from autellix.simulator.stepmodel import StepProfile
from autellix.simulator.validation import encode_text


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A validated request, ready for the engine."""

    prompt_token_ids: list[int]
    max_tokens: int
    output_len: int
    priority: int
    stream: bool
    include_usage: bool
    return_token_ids: bool
    request_key: int


class SimEngineService:
    """Everything one server instance owns: settings, engine driver, metrics."""

    def __init__(self, settings: SimEngineSettings, profile: StepProfile, driver: EngineDriver) -> None:
        self.settings = settings
        self.profile = profile
        self.driver = driver
        config = driver.engine.config
        cache_config = {
            "block_size": str(config.block_size),
            "num_gpu_blocks": str(config.num_gpu_blocks),
            "enable_prefix_caching": str(config.enable_prefix_caching),
        }
        self.metrics = SimEngineMetrics(
            lambda: driver.engine.stats,
            settings.model_name,
            cache_config,
            read_lag=lambda: driver.lag_seconds,
        )
        self.created = int(time.time())

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.settings.model_name:
            raise ApiError(
                f"The model `{model}` does not exist.", status=404, error_type="NotFoundError", param="model"
            )

    def prepare(self, body: ChatCompletionRequest | CompletionRequest) -> PreparedRequest:
        self.check_model(body.model)
        if isinstance(body, ChatCompletionRequest):
            if not body.messages:
                raise ApiError("messages: must contain at least one message", param="messages")
            prompt_ids = self.chat_prompt_ids([{"role": m.role, "content": m.text()} for m in body.messages])
            requested = (
                body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
            )
        else:
            prompt_ids = _completion_prompt_ids(body.prompt)
            requested = body.max_tokens
        stream_options = body.stream_options
        return self.prepare_prompt(
            prompt_ids,
            requested,
            ignore_eos=body.ignore_eos,
            min_tokens=body.min_tokens,
            priority=body.priority,
            stream=bool(body.stream),
            include_usage=bool(stream_options and stream_options.include_usage),
            return_token_ids=bool(body.return_token_ids),
        )

    @staticmethod
    def chat_prompt_ids(messages: list[dict[str, str]]) -> list[int]:
        """A conversation through the chat template, as every chat-like API renders it."""
        return encode_text(tokenizer.apply_chat_template(messages))

    def prepare_prompt(
        self,
        prompt_ids: list[int],
        requested: int | None,
        *,
        ignore_eos: bool,
        min_tokens: int = 0,
        priority: int = 0,
        stream: bool = False,
        include_usage: bool = False,
        return_token_ids: bool = False,
        max_tokens_param: str = "max_tokens",
    ) -> PreparedRequest:
        settings = self.settings
        if not prompt_ids:
            raise ApiError("The prompt is empty.", param="prompt")
        max_len = settings.max_model_len
        # vLLM 0.32's checks, in its order: an output longer than the model is an error, a prompt longer
        # than the model is an error, otherwise the output is clipped to the context that remains.
        name = max_tokens_param
        if requested is not None and requested < 1:
            raise ApiError(f"{name} must be at least 1, got {requested}.", param=name)
        if requested is not None and requested > max_len:
            raise ApiError(
                f"{name}={requested} cannot be greater than max_model_len={max_len}. Please request "
                "fewer output tokens.",
                param=name,
            )
        if len(prompt_ids) > max_len:
            raise ApiError(
                f"This model's maximum context length is {max_len} tokens. However, your prompt contains "
                f"{len(prompt_ids)} input tokens, which exceeds this limit even without any output tokens. "
                "Please reduce the length of the input prompt.",
                param="input_tokens",
            )
        room = max_len - len(prompt_ids)
        max_tokens = room if requested is None else min(requested, room)
        if max_tokens < 1:
            raise ApiError(f"{name} must be at least 1, got {max_tokens}.", param=name)
        key = zlib.crc32(json.dumps(prompt_ids[-256:]).encode()) ^ len(prompt_ids)
        if ignore_eos:
            output_len = max_tokens
        else:
            rng = random.Random(settings.seed * 1_000_003 + key)
            drawn = 1 + int(rng.expovariate(1.0 / max(settings.mean_output_tokens - 1, 1e-9)))
            output_len = max(min(drawn, max_tokens), min(min_tokens, max_tokens), 1)
        return PreparedRequest(
            prompt_token_ids=prompt_ids,
            max_tokens=max_tokens,
            output_len=output_len,
            # vLLM 0.32 ignores an integer priority on an FCFS server (reference.md §6).
            priority=priority if settings.scheduling_policy == "priority" else 0,
            stream=stream,
            include_usage=include_usage,
            return_token_ids=return_token_ids,
            request_key=key,
        )

    def token_id(self, prepared: PreparedRequest, index: int) -> int:
        return tokenizer.generated_token_id(self.settings.seed, prepared.request_key, index)


def _completion_prompt_ids(prompt: str | list[int] | list[str] | list[list[int]]) -> list[int]:
    if isinstance(prompt, str):
        return encode_text(prompt)
    if not prompt:
        return []
    if all(isinstance(p, int) for p in prompt):
        return [int(p) for p in prompt]  # type: ignore[arg-type]
    if len(prompt) != 1:
        raise ApiError("The simulated engine takes one prompt per request, not a batch.", param="prompt")
    only = prompt[0]
    return encode_text(only) if isinstance(only, str) else list(only)  # type: ignore[arg-type]


SERVICE = web.AppKey("service", SimEngineService)


async def outputs(
    service: SimEngineService, prepared: PreparedRequest, handle: RequestHandle
) -> AsyncIterator[tuple[list[int], bool, int]]:
    """Yield (new token ids, finished, cached tokens) per step; record latency metrics at the end."""
    produced = 0
    first_at: float | None = None
    last_at = handle.arrival
    gaps: list[float] = []
    queue_time: float | None = None
    while True:
        output, at = await handle.outputs.get()
        if first_at is None:
            first_at = at
            if output.first_scheduled_time is not None:
                queue_time = max(0.0, output.first_scheduled_time - handle.arrival)
        else:
            gaps.append(at - last_at)
        last_at = at
        new_ids = [service.token_id(prepared, produced + i) for i in range(output.new_tokens)]
        produced += output.new_tokens
        if output.finished:
            reason = finish_reason(prepared, produced)
            service.metrics.observe_finished(
                ttft=first_at - handle.arrival,
                token_gaps=gaps,
                e2e=at - handle.arrival,
                queue_time=queue_time,
                finish_reason=reason,
            )
        yield new_ids, output.finished, output.num_cached_tokens
        if output.finished:
            return


def finish_reason(prepared: PreparedRequest, produced: int) -> str:
    return "length" if produced >= prepared.max_tokens else "stop"


@contextlib.asynccontextmanager
async def running(
    service: SimEngineService, prepared: PreparedRequest, request_id: str
) -> AsyncIterator[RequestHandle]:
    """The request in the engine for as long as the block runs: released when it finished, aborted
    (its KV blocks freed) when the block ends before (a client that went away)."""
    try:
        handle = service.driver.submit(
            SimRequest(
                request_id,
                prepared.prompt_token_ids,
                prepared.output_len,
                0.0,
                prepared.priority,
                token_key=prepared.request_key,
            )
        )
    except ValueError as exc:
        raise ApiError(str(exc)) from exc
    try:
        yield handle
    finally:
        if handle.finished:
            service.driver.release(request_id)
        else:
            service.driver.abort(request_id)
