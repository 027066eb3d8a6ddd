"""The slice of vLLM's OpenAI-compatible API that the simulated engine speaks (no IO here).

Request bodies are validated with pydantic models shaped like vLLM's own (unknown fields are accepted and
ignored, as vLLM does); problems become :class:`ApiError` with the status and OpenAI-style error JSON
that vLLM returns (``{"error": {"message", "type", "param", "code"}}``). Responses and SSE chunks are
built by plain functions so the server only moves bytes.

Fields that matter to scheduling: ``max_tokens`` (``max_completion_tokens`` on chat), ``ignore_eos``
(forces the output to exactly ``max_tokens``, as vLLM's benchmarks use it), ``priority`` (int, lower
first; ignored on an FCFS server, as vLLM 0.32 does), ``stream`` with ``stream_options.include_usage``,
``return_token_ids``, and token-id prompts on completions. Every other field vLLM checks is checked as
vLLM does by validation.py, so a request the simulated engine serves is one vLLM serves too.

Parity with vLLM 0.32 (checked against a real server by tests/real_vllm/test_parity.py): integer fields
are parsed leniently as vLLM's pydantic models do (``"3"`` and ``3.0`` are 3, ``3.5`` is an error;
``priority`` within int64); completions default to ``max_tokens`` 16; ``stream_options`` without
``stream`` is an error; responses and chunks carry the same keys as vLLM's, null where the simulated
engine has nothing to say, and usage looks like vLLM's with ``--enable-prompt-tokens-details``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autellix import __version__
from autellix.jsonbody import JsonBodyError, parse_json
from autellix.simulator.validation import RequestRejected, check_request

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SYSTEM_FINGERPRINT = f"autellix-sim-{__version__}"


class ApiError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(
        self, message: str, status: int = 400, error_type: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.status,
            }
        }


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class _SamplingFields(BaseModel):
    """Fields shared by chat and completions requests."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    priority: int = Field(0, ge=INT64_MIN, le=INT64_MAX)
    return_token_ids: bool | None = False
    n: int | None = 1  # null is 1, as in vLLM
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    min_tokens: int = 0

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"n must be at least 1, got {value}.")
        if value not in (None, 1):
            raise ValueError("the simulated engine serves n=1 only")
        return value


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]  # lax ints, as vLLM's: [1.0, True] is [1, 1]
    max_tokens: int | None = 16  # vLLM's default for completions (chat: the rest of the context)


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error.get("loc", ()) if not isinstance(p, int) or p == 0) or "body"


def parse_request(
    kind: Literal["chat", "completion"], raw: bytes
) -> ChatCompletionRequest | CompletionRequest:
    """Validate a request body; raise :class:`ApiError` (400) with a message naming the field."""
    try:
        data = parse_json(raw)
    except JsonBodyError as exc:
        raise ApiError(str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError("Request body must be a JSON object")
    if data.get("stream_options") and not data.get("stream"):
        raise ApiError("Stream options can only be defined when `stream=True`.", param="stream_options")
    model: type[ChatCompletionRequest | CompletionRequest] = (
        ChatCompletionRequest if kind == "chat" else CompletionRequest
    )
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _loc(dict(first))
        raise ApiError(f"{field}: {first['msg']}", param=field.split(".")[0]) from exc
    requested = parsed.max_tokens
    if isinstance(parsed, ChatCompletionRequest) and parsed.max_completion_tokens is not None:
        requested = parsed.max_completion_tokens
    try:  # what vLLM checks beyond the fields the simulated engine uses (validation.py)
        check_request(kind, data, requested)
    except RequestRejected as exc:
        raise ApiError(exc.message, param=exc.param) from None
    return parsed


@dataclass(frozen=True, slots=True)
class Completion:
    """What the server hands back when a request ends; feeds the final response or the last chunks."""

    request_id: str
    created: int
    model: str
    text: str
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str
    num_cached_tokens: int


def usage(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    kind: Literal["chat", "completion"] = "chat",
    streamed: bool = False,
) -> dict[str, Any]:
    """Usage as vLLM 0.32 reports it with ``--enable-prompt-tokens-details``; its detail keys differ by
    endpoint and between whole responses and usage chunks."""
    details: dict[str, Any] = {"cached_tokens": cached_tokens}
    if kind == "chat" or not streamed:
        details["created_cache_tokens"] = 0 if kind == "chat" else None
    if not streamed:
        details["multimodal_tokens"] = None
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": details,
    }
    if not streamed:
        out["completion_tokens_details"] = None
    return out


def chat_response(done: Completion, return_token_ids: bool) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": done.text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "reasoning": None,
    }
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": done.finish_reason,
        "stop_reason": None,
        "token_ids": done.token_ids if return_token_ids else None,
        "routed_experts": None,
    }
    return {
        "id": f"chatcmpl-{done.request_id}",
        "object": "chat.completion",
        "created": done.created,
        "model": done.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(len(done.prompt_token_ids), len(done.token_ids), done.num_cached_tokens, "chat"),
        "prompt_logprobs": None,
        "prompt_token_ids": done.prompt_token_ids if return_token_ids else None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def completion_response(done: Completion, return_token_ids: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "text": done.text,
        "logprobs": None,
        "finish_reason": done.finish_reason,
        "stop_reason": None,
        "token_ids": done.token_ids if return_token_ids else None,
        "prompt_logprobs": None,
        "prompt_token_ids": done.prompt_token_ids if return_token_ids else None,
        "routed_experts": None,
    }
    return {
        "id": f"cmpl-{done.request_id}",
        "object": "text_completion",
        "created": done.created,
        "model": done.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(len(done.prompt_token_ids), len(done.token_ids), done.num_cached_tokens, "completion"),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def models_response(name: str, created: int, max_model_len: int) -> dict[str, Any]:
    """``GET /v1/models``: one model card, with vLLM's permission record."""
    permission = {
        "id": f"modelperm-{name}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": name,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    return {"object": "list", "data": [card]}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event line pair, as vLLM writes them."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """Identity shared by every chunk of one streamed response.

    As in vLLM 0.32: a chat stream opens with a role chunk (which carries ``prompt_token_ids``), a
    completion stream carries them on its first content chunk; the last chunk before ``[DONE]`` (the
    usage chunk if any, else the final content chunk) carries ``system_fingerprint``.
    """

    kind: Literal["chat", "completion"]
    request_id: str
    created: int
    model: str

    def _base(self) -> dict[str, Any]:
        if self.kind == "chat":
            return {
                "id": f"chatcmpl-{self.request_id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
            }
        return {
            "id": f"cmpl-{self.request_id}",
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
        }

    def role_chunk(self, prompt_token_ids: list[int] | None = None) -> dict[str, Any]:
        """vLLM's first chat chunk announces the role with empty content."""
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return {
            **self._base(),
            "choices": [choice],
            "prompt_token_ids": prompt_token_ids,
            "prompt_text": None,
        }

    def delta_chunk(
        self,
        text: str,
        token_ids: list[int] | None,
        finish_reason: str | None,
        prompt_token_ids: list[int] | None = None,
        last: bool = False,
    ) -> dict[str, Any]:
        """One content chunk; ``prompt_token_ids`` only on a completion stream's first chunk, ``last``
        when no usage chunk follows."""
        choice: dict[str, Any]
        if self.kind == "chat":
            choice = {
                "index": 0,
                "delta": {"content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            if finish_reason is not None:
                choice["stop_reason"] = None
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
                "prompt_token_ids": prompt_token_ids,
            }
        choice["token_ids"] = token_ids
        chunk = {**self._base(), "choices": [choice]}
        if last:
            chunk["system_fingerprint"] = SYSTEM_FINGERPRINT
        return chunk

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
        return {
            **self._base(),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens, self.kind, streamed=True),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
