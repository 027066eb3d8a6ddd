"""The simulated engine's request checks that vLLM makes and the engine itself has no use for.

The simulated engine generates no tool calls, no log-probabilities and no structured output, and samples
nothing, so its request models (openai_api.py) read only what scheduling needs. vLLM 0.32 still checks
the other fields, and a client that the simulated engine served would get a 400 from vLLM for the same
request: ``tools: "x"``, ``stop: 5``, ``top_logprobs: 1000000``, a negative or out-of-vocabulary token
id, a temperature of NaN. This module makes the same checks, so that a workload tested against the
simulated engine does not break on a real one. Each answer's status was taken from a real vLLM 0.32
server (tests/real_vllm/test_parity.py keeps them equal); messages are ours where vLLM's are pydantic's
dumps of a dozen union members.

Theory of operation
-------------------
:func:`check_request` runs after the request model has been validated, in vLLM's order:

1. Types (pydantic, as vLLM's protocol models): :class:`ChatChecks` / :class:`CompletionChecks` give
   the fields the engine ignores their vLLM types, e.g. ``tools`` a list of ``{"type": "function",
   "function": {"name": str, ...}}``, ``stop`` a string or at most 4 strings, ``logit_bias`` a mapping to
   numbers, ``response_format`` one of three types, booleans for ``echo`` and friends. Unknown fields
   stay accepted and ignored, as in vLLM.
2. Messages: a content that is null only on an assistant message (a missing content is fine, as vLLM
   has it); content parts are objects with a ``type``: ``text`` needs a string ``text``, ``refusal`` a
   string ``refusal``, multimodal parts are refused (the simulated model is text-only, as vLLM says of
   a text-only model), other types are unknown.
3. Cross-field rules of vLLM's request validators: ``tool_choice`` (other than ``"none"``) needs
   ``tools``; ``tools`` must not be empty; a named ``tool_choice`` must name one of ``tools``;
   ``top_logprobs`` above 0 needs ``logprobs: true``; ``response_format`` of type ``json_schema``
   needs ``json_schema``; ``continue_final_message`` and ``add_generation_prompt`` not both;
   ``suffix`` (no fill-in-the-middle model) and ``prompt_embeds`` (not enabled) are refused.
4. Sampling parameters, as vLLM's ``SamplingParams`` checks them: temperature finite and in [0, 2],
   ``top_p`` in (0, 1], ``top_k`` -1, 0 or at least 1, ``min_p`` in [0, 1], presence and frequency
   penalties in [-2, 2], ``repetition_penalty`` above 0, ``min_tokens`` in
   [0, max_tokens], ``stop`` without empty strings, at most :data:`MAX_LOGPROBS` log-probabilities
   (-1 means the whole vocabulary).
5. Token ids (prompt, ``logit_bias``, ``stop_token_ids``, ``allowed_token_ids``) in ``[0, VOCAB_SIZE)``.

A generation request's body must be sent as ``application/json`` (:func:`check_content_type`). Text
that cannot be encoded (a lone UTF-16 surrogate such as ``"\\ud800"``, which JSON allows) is a 400
where the prompt is tokenized (:func:`encode_text`), as vLLM's tokenizer refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autellix.simulator import tokenizer

MAX_LOGPROBS = 20  # vLLM's --max-logprobs default
MULTIMODAL_PARTS = frozenset({"image_url", "input_audio", "audio_url", "video_url", "file", "image_embeds"})


class RequestRejected(ValueError):
    """A request vLLM would refuse; openai_api.py answers it as a 400 in vLLM's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"] = "function"
    function: _Function


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class _SharedChecks(BaseModel):
    """Rule 1 for fields both APIs share."""

    model_config = ConfigDict(extra="allow")
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stop_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    allowed_token_ids: list[int] | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    prompt_logprobs: int | None = None
    response_format: _ResponseFormat | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    request_id: str | None = None


class ChatChecks(_SharedChecks):
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    documents: list[dict[str, Any]] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class CompletionChecks(_SharedChecks):
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    add_special_tokens: bool = True


def _first_error(exc: ValidationError) -> RequestRejected:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return RequestRejected(f"{where}: {first['msg']}", param=where.split(".")[0])


def check_request(
    kind: Literal["chat", "completion"], data: Mapping[str, Any], max_tokens: int | None
) -> None:
    """Rules 1-5 for a body whose request model validated; ``max_tokens`` as the client asked."""
    model: type[ChatChecks | CompletionChecks] = ChatChecks if kind == "chat" else CompletionChecks
    try:
        checks = model.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    if isinstance(checks, ChatChecks):
        _check_messages(data.get("messages"))
        _check_tools(checks, "tool_choice" in data)
        _check_chat_logprobs(checks)
        if checks.continue_final_message and checks.add_generation_prompt:
            raise RequestRejected(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
    else:
        if checks.suffix is not None:
            raise RequestRejected(
                "suffix is only supported for models with FIM completion rendering", param="suffix"
            )
        if data.get("prompt_embeds") is not None:
            raise RequestRejected(
                "You must set `--enable-prompt-embeds` to input `prompt_embeds`.", param="prompt_embeds"
            )
        _check_logprobs(checks.logprobs, "logprobs", "sample")
        _check_prompt_ids(data.get("prompt"))
    _check_logprobs(checks.prompt_logprobs, "prompt_logprobs", "prompt")
    response_format = checks.response_format
    if (
        response_format is not None
        and response_format.type == "json_schema"
        and not response_format.json_schema
    ):
        raise RequestRejected(
            "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
            param="response_format",
        )
    _check_sampling(data, checks, max_tokens)
    _check_token_ids(checks)


def _check_messages(messages: Any) -> None:
    """Rule 2 (the request model has already checked that each message is an object with a role)."""
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, Mapping):
            continue
        if "content" in message and message["content"] is None and message.get("role") != "assistant":
            raise RequestRejected(
                f"{where}.content: only an assistant message may have a null content", param="messages"
            )
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise RequestRejected(f"{where}.name: Input should be a valid string", param="messages")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not (
            isinstance(tool_calls, list) and all(isinstance(call, Mapping) for call in tool_calls)
        ):
            raise RequestRejected(f"{where}.tool_calls: Input should be a list of objects", param="messages")
        content = message.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                _check_part(part, f"{where}.content.{number}")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, Mapping):
        raise RequestRejected(f"{where}: a content part must be an object", param="messages")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise RequestRejected(f"{where}.type: Field required", param="messages")
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise RequestRejected(f"{where}.{kind}: Input should be a valid string", param="messages")
    elif kind in MULTIMODAL_PARTS:
        raise RequestRejected("the simulated model is not a multimodal model", param="messages")
    else:
        raise RequestRejected(f"{where}.type: unknown content part type {kind[:40]!r}", param="messages")


def _check_tools(checks: ChatChecks, choice_given: bool) -> None:
    """Rule 3 for tools, in vLLM's order."""
    choice = checks.tool_choice
    if choice_given and choice is not None and choice != "none" and checks.tools is None:
        raise RequestRejected("When using `tool_choice`, `tools` must be set.", param="tool_choice")
    if checks.tools is not None and not checks.tools:
        raise RequestRejected(
            "`tools` must not be an empty array. Either provide at least one tool or omit the field "
            "entirely.",
            param="tools",
        )
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        raise RequestRejected(
            f'Invalid value for `tool_choice`: {choice[:40]}! Only named tools, "none", "auto" or '
            '"required" are supported.',
            param="tool_choice",
        )
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise RequestRejected(
                "A named `tool_choice` is {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        if name not in {tool.function.name for tool in checks.tools or ()}:
            raise RequestRejected(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                param="tool_choice",
            )


def _check_chat_logprobs(checks: ChatChecks) -> None:
    top = checks.top_logprobs
    if top is None:
        return
    if top < 0 and top != -1:
        raise RequestRejected("`top_logprobs` must be a non-negative value or -1.", param="top_logprobs")
    if top > 0 and not checks.logprobs:
        raise RequestRejected(
            "when using `top_logprobs`, `logprobs` must be set to true.", param="top_logprobs"
        )
    if checks.logprobs:
        _check_logprobs(top, "logprobs", "sample")


def _check_logprobs(requested: int | None, param: str, what: str) -> None:
    """Rule 4: at most MAX_LOGPROBS, -1 meaning every token of the vocabulary."""
    if requested is None:
        return
    if requested < -1:
        raise RequestRejected(f"`{param}` must be a non-negative value or -1.", param=param)
    count = tokenizer.VOCAB_SIZE if requested == -1 else requested
    if count > MAX_LOGPROBS:
        raise RequestRejected(
            f"Requested {what} logprobs of {count}, which is greater than max allowed: {MAX_LOGPROBS}",
            param=param,
        )


def _in_range(value: float, low: float, high: float) -> bool:
    return low <= value <= high  # False for NaN


def _check_sampling(data: Mapping[str, Any], checks: _SharedChecks, max_tokens: int | None) -> None:
    """Rule 4 (types were checked by the request model and by rule 1)."""
    temperature = checks.temperature  # parsed as vLLM parses it ("NaN" and "2" are numbers too)
    if temperature is not None:
        if not math.isfinite(temperature):
            raise RequestRejected(
                f"temperature must be a finite number, got {float(temperature)}.", param="temperature"
            )
        if temperature < 0:
            raise RequestRejected(
                f"temperature must be non-negative, got {float(temperature)}.", param="temperature"
            )
        if temperature > 2:
            raise RequestRejected(
                f"temperature must be in [0, 2], got {float(temperature)}.", param="temperature"
            )
    top_p = checks.top_p
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestRejected(f"top_p must be in (0, 1], got {float(top_p)}.", param="top_p")
    if checks.top_k is not None and checks.top_k < -1:
        raise RequestRejected(f"top_k must be 0 (disable), or at least 1, got {checks.top_k}.", param="top_k")
    if checks.min_p is not None and not _in_range(checks.min_p, 0, 1):
        raise RequestRejected(f"min_p must be in [0, 1], got {checks.min_p}.", param="min_p")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(checks, name)
        if value is not None and not _in_range(value, -2, 2):
            raise RequestRejected(f"{name} must be in [-2, 2], got {value}.", param=name)
    penalty = checks.repetition_penalty
    if penalty is not None and not penalty > 0:
        raise RequestRejected(
            f"repetition_penalty must be greater than zero, got {penalty}.", param="repetition_penalty"
        )
    min_tokens = data.get("min_tokens")
    if isinstance(min_tokens, int) and not isinstance(min_tokens, bool):
        if min_tokens < 0:
            raise RequestRejected(
                f"min_tokens must be greater than or equal to 0, got {min_tokens}.", param="min_tokens"
            )
        if max_tokens is not None and max_tokens >= 1 and min_tokens > max_tokens:
            raise RequestRejected(
                f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
                param="min_tokens",
            )
    stop = checks.stop
    if stop == "" or (isinstance(stop, list) and "" in stop):
        raise RequestRejected("stop cannot contain an empty string.", param="stop")


def _out_of_vocabulary(ids: Sequence[int]) -> list[int]:
    return [token for token in ids if not 0 <= token < tokenizer.VOCAB_SIZE]


def _check_token_ids(checks: _SharedChecks) -> None:
    """Rule 5 for the token ids of sampling parameters."""
    if checks.logit_bias is not None:
        bad_keys = [key for key in checks.logit_bias if not key.lstrip("-").isdigit()]
        if bad_keys:
            raise RequestRejected(
                f"logit_bias contains key(s) that cannot be converted to integer token IDs: {bad_keys[:5]}",
                param="logit_bias",
            )
        outside = _out_of_vocabulary([int(key) for key in checks.logit_bias])
        if outside:
            raise RequestRejected(
                f"token_id(s) {outside[:5]} in logit_bias contain out-of-vocab token ids. "
                f"Vocabulary size: {tokenizer.VOCAB_SIZE}",
                param="logit_bias",
            )
    for name in ("stop_token_ids", "allowed_token_ids"):
        ids = getattr(checks, name)
        outside = _out_of_vocabulary(ids or ())
        if outside:
            raise RequestRejected(
                f"token_id(s) {outside[:5]} in {name} contain out-of-vocab token ids. "
                f"Vocabulary size: {tokenizer.VOCAB_SIZE}",
                param=name,
            )


def _check_prompt_ids(prompt: Any) -> None:
    """Rule 5 for a completions prompt given as token ids (one list, or a batch of lists)."""
    if not isinstance(prompt, list):
        return
    lists = [prompt] if all(not isinstance(item, list) for item in prompt) else prompt
    for ids in lists:
        if not isinstance(ids, list):
            continue
        for token in ids:
            if isinstance(token, int | float) and not isinstance(token, bool) and token < 0:
                raise RequestRejected(
                    f"prompt: token ids must be greater than or equal to 0, got {token}", param="prompt"
                )
            if isinstance(token, int) and token >= tokenizer.VOCAB_SIZE:
                raise RequestRejected(f"Token id {token} is out of vocabulary", param="prompt")


def check_content_type(content_type: str) -> None:
    """vLLM answers a body sent as anything but ``application/json`` (or without a type) with a 400."""
    if content_type != "application/json":
        raise RequestRejected("Unsupported Media Type: Only 'application/json' is allowed")


def encode_text(text: str) -> list[int]:
    """The tokenizer's ids of ``text``; text that is not encodable (a lone surrogate) is a 400."""
    try:
        return tokenizer.encode(text)
    except UnicodeEncodeError:
        raise RequestRejected(
            "The prompt contains text that is not valid Unicode (a lone surrogate)."
        ) from None


__all__ = [
    "MAX_LOGPROBS",
    "ChatChecks",
    "CompletionChecks",
    "RequestRejected",
    "check_content_type",
    "check_request",
    "encode_text",
]
