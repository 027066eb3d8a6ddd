"""The simulated engine's Responses API (``/v1/responses``) in vLLM 0.32's shapes (pure: no IO).

As vLLM serves it (checked by tests/real_vllm/test_parity.py):

1. Request: ``input`` a string or a list of items (messages with string content or ``input_text`` /
   ``output_text`` parts; other items' text is read as a user turn), ``instructions`` a system turn,
   ``max_output_tokens`` (default: the rest of the context), ``previous_response_id``, ``store``
   (default true), ``background``, ``stream``, ``priority``, ``ignore_eos``; unknown fields ignored.
2. Storing is off unless the server enables it (vLLM: ``VLLM_ENABLE_RESPONSES_API_STORE=1``; here
   ``--enable-responses-store``): ``store: true`` is then silently ignored. A stored response keeps
   its conversation (input messages plus its own output), which a call with its id as
   ``previous_response_id`` continues; an id that is not stored is a 404 ``Response with id '...' not
   found.`` (param ``response_id``), as are ``GET`` and cancel of one. Cancel of a response that is not
   queued or in progress is a 400 ``Cannot cancel a synchronous response.``; ``background`` needs the
   store (400 otherwise) and is not streamed here (400).
3. Reply: ``object: "response"``, one ``message`` output item with one ``output_text`` part, ``status``
   ``completed``, or ``incomplete`` with ``incomplete_details.reason = "max_output_tokens"`` when the
   output reached its limit; usage with ``input_tokens_details.cached_tokens``.
4. Stream: named events ``response.created``, ``response.in_progress``, ``response.output_item.added``,
   ``response.content_part.added``, ``response.output_text.delta`` (one per engine step),
   ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``,
   ``response.completed`` (the whole reply), numbered by ``sequence_number``; no ``[DONE]``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autellix.simulator.openai_api import INT64_MAX, INT64_MIN, ApiError
from autellix.simulator.request_body import parse_body

MAX_STORED = 10_000  # vLLM never forgets a stored response; a long simulation must


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    store: bool | None = True
    background: bool | None = False
    stream: bool | None = False
    metadata: dict[str, Any] | None = None
    priority: int = Field(0, ge=INT64_MIN, le=INT64_MAX)
    ignore_eos: bool = False
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None


def parse_request(raw: bytes) -> ResponsesRequest:
    """Rule 1; a bad body is a 400 worded as vLLM's validation errors are."""
    return parse_body(raw, ResponsesRequest)


def _item_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    for key in ("output", "arguments"):
        if isinstance(item.get(key), str):
            return str(item[key])
    return ""


def input_messages(request: ResponsesRequest) -> list[dict[str, str]]:
    """Rule 1: the request's own turns (instructions first)."""
    turns = [{"role": "system", "content": request.instructions}] if request.instructions else []
    if isinstance(request.input, str):
        return [*turns, {"role": "user", "content": request.input}]
    for item in request.input:
        role = item.get("role") if isinstance(item.get("role"), str) else "user"
        turns.append({"role": str(role), "content": _item_text(item)})
    return turns


def not_found(response_id: str) -> ApiError:
    return ApiError(
        f"Response with id '{response_id}' not found.",
        status=404,
        error_type="invalid_request_error",
        param="response_id",
    )


Status = Literal["queued", "in_progress", "completed", "incomplete", "cancelled", "failed"]


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[dict[str, str]]  # input turns and this response's output (rule 2)


@dataclass(slots=True)
class ResponseStore:
    """Rule 2: the stored responses, at most :data:`MAX_STORED` (oldest out first)."""

    enabled: bool = False
    entries: OrderedDict[str, StoredResponse] = field(default_factory=OrderedDict)

    def get(self, response_id: str) -> StoredResponse | None:
        return self.entries.get(response_id)

    def put(self, response: dict[str, Any], conversation: list[dict[str, str]]) -> None:
        self.entries[response["id"]] = StoredResponse(response, conversation)
        self.entries.move_to_end(response["id"])
        while len(self.entries) > MAX_STORED:
            self.entries.popitem(last=False)


def response_object(
    request: ResponsesRequest,
    response_id: str,
    created: int,
    model: str,
    status: Status,
    max_output_tokens: int,
    text: str | None = None,
    message_id: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rule 3 (``text`` None: no output yet)."""
    output = []
    if text is not None:
        parts: list[dict[str, Any]] = (
            [{"annotations": [], "text": text, "type": "output_text", "logprobs": None}] if text else []
        )
        item = {"id": message_id, "content": parts, "role": "assistant", "status": "completed"}
        output.append({**item, "type": "message", "phase": None})
    return {
        "id": response_id,
        "created_at": created,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.instructions,
        "metadata": request.metadata,
        "model": model,
        "object": "response",
        "output": output,
        "parallel_tool_calls": True,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "tool_choice": "none",
        "tools": [],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "background": bool(request.background),
        "max_output_tokens": max_output_tokens,
        "max_tool_calls": None,
        "previous_response_id": request.previous_response_id,
        "prompt": None,
        "reasoning": None,
        "service_tier": "auto",
        "status": status,
        "text": None,
        "top_logprobs": None,
        "truncation": "disabled",
        "usage": usage,
        "user": request.user,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "input_messages": None,
        "output_messages": None,
    }


def usage(input_tokens: int, output_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": cached_tokens,
            "cache_write_tokens": 0,
            "input_tokens_per_turn": [],
            "cached_tokens_per_turn": [],
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": 0,
            "tool_output_tokens": 0,
            "output_tokens_per_turn": [],
            "tool_output_tokens_per_turn": [],
        },
        "total_tokens": input_tokens + output_tokens,
    }


class EventStream:
    """Rule 4: the events of one streamed response, numbered in order."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.sequence = 0
        self.text = ""

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        payload = {**body, "sequence_number": self.sequence, "type": kind}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

    def opening(self, initial: dict[str, Any]) -> bytes:
        item: dict[str, Any] = {"id": self.message_id, "content": [], "role": "assistant"}
        item.update(status="in_progress", type="message", phase=None)
        part = {"annotations": [], "text": "", "type": "output_text", "logprobs": []}
        return (
            self._event("response.created", {"response": initial})
            + self._event("response.in_progress", {"response": initial})
            + self._event("response.output_item.added", {"item": item, "output_index": 0})
            + self._event(
                "response.content_part.added",
                {"content_index": 0, "item_id": self.message_id, "output_index": 0, "part": part},
            )
        )

    def delta(self, text: str) -> bytes:
        self.text += text
        return self._event(
            "response.output_text.delta",
            {
                "content_index": 0,
                "delta": text,
                "item_id": self.message_id,
                "logprobs": [],
                "output_index": 0,
            },
        )

    def closing(self, final: dict[str, Any]) -> bytes:
        part: dict[str, Any] = {"annotations": [], "text": self.text, "type": "output_text", "logprobs": None}
        item = {"id": self.message_id, "content": [part] if self.text else [], "role": "assistant",
                "status": "completed", "type": "message", "phase": None}  # fmt: skip
        where = {"content_index": 0, "item_id": self.message_id, "output_index": 0}
        return (
            self._event("response.output_text.done", {**where, "logprobs": [], "text": self.text})
            + self._event("response.content_part.done", {**where, "part": part})
            + self._event("response.output_item.done", {"item": item, "output_index": 0})
            + self._event("response.completed", {"response": final})
        )
