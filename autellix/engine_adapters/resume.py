"""Abort-and-resume of a streamed call: the pure half (issue 14 item 3; scheduler.py rule 5).

A sidecar cannot make an unmodified engine preempt a running request, but it can stop one (close its
connection: vLLM and the simulated engine abort it, free its blocks and keep the full ones in the
prefix cache) and later ask for the rest: ``/v1/completions`` with the token-id prompt = the call's
prompt token ids + the tokens it generated, ``max_tokens`` reduced by as many (reference.md §6).
This module decides which calls may be stopped, watches what their streams say, builds the resumed
request and turns its chunks back into the stream the client started to read. The IO (closing the
connection, waiting for the re-admission, sending the request) is relay.py's.

Theory of operation
-------------------
1. **Which calls** (:func:`why_not_resumable`). Only a call that can be resumed *faithfully* is
   entered resumable: a streamed ``/v1/chat/completions`` or ``/v1/completions`` call with an
   explicit ``max_tokens`` (``max_completion_tokens``), one choice, one prompt (text, or token ids),
   text-only messages, and every other field in a known list: sampling fields a resumed request
   carries unchanged (:data:`COPIED`), fields that only shape the prompt (which the engine hands back
   as token ids anyway: chat templates, ``add_special_tokens``), and fields harmless at their default.
   Anything that a resumed request would *not* reproduce makes a call unresumable: ``logprobs``,
   ``echo``, ``best_of``, ``n`` > 1, ``suffix``, tools and structured output (their parsers and
   grammars would restart mid-answer), stop strings and ``bad_words`` (a match could straddle the
   resume point), presence and frequency penalties (they count output tokens only, and resumed ones
   would be prompt), ``seed`` (a seeded call promises the same tokens every time), per-chunk usage
   (``continuous_usage_stats``), ``return_token_ids`` asked by the client itself, and any field this
   list does not know. Being conservative costs only a call that is never stopped.
2. **Watching the first spell** (:meth:`ResumeSession.rewrite`, one SSE event at a time). The request
   goes out with ``return_token_ids: true``. The engine then returns the prompt's token ids (chat: on
   the role chunk; completions: on the first chunk) and every chunk's generated ids; the session
   records them and sets those fields back to null, which is what the engine says without the flag,
   so the client reads exactly the stream it asked for. (vLLM's chat also sends a chunk with an
   empty delta for tokens its parsers hold back; with the flag off it would not: such chunks are
   dropped.) The call becomes unresumable (:attr:`ResumeSession.can_resume` turns False, and the shell
   tells the scheduler) when its stream shows something a resumed request would not reproduce: a
   chat delta with more than ``role`` and ``content`` (a reasoning or tool parser at work), an
   identity chunk without prompt token ids (an engine that ignores ``return_token_ids``), or a
   ``finish_reason`` (the call is ending anyway). Every token's chunk passes here, so the common one
   (a plain content chunk once the prompt ids are known) is handled on its bytes: its ``token_ids``
   array is read and replaced by ``null`` in place, without decoding and re-encoding the JSON; any
   chunk that does not match that shape exactly is decoded (the tests hold both ways to the same
   result).
3. **Resuming** (:meth:`ResumeSession.resume_request`). Nothing forwarded yet: the original request
   again, unchanged. Else ``/v1/completions`` with ``prompt`` = prompt ids + generated ids,
   ``max_tokens`` = the original minus what was generated (``min_tokens`` likewise), the copied
   sampling fields, ``stream`` with usage and ``return_token_ids``. Only tokens whose chunks were
   forwarded count as generated: whatever the engine made after the last forwarded chunk is lost
   with the abort and made again.
4. **Translating the resumed spell**: every chunk gets the first spell's ``id``, ``created`` and
   ``model``; for a chat call a completions chunk becomes a ``chat.completion.chunk`` whose delta
   ``content`` is the chunk's ``text``; token ids are nulled as in rule 2. Usage is the call's, not the
   spell's: ``prompt_tokens`` the original prompt, ``completion_tokens`` all generated tokens,
   ``cached_tokens`` the resumed spell's hits within the original prompt (an aborted spell reports no
   usage, so this is the best knowable figure; it may count blocks the first spell computed).
5. Known limits: text that the engine's detokenizer held back at the stop (a character split across
   tokens) is not sent again; a resumed call is sampled afresh from the resume point (same
   distribution, not the same tokens, which is why seeded calls are not resumable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from autellix.engine_adapters.accounting import requested_output_tokens
from autellix.engine_adapters.sse import data_of

__all__ = ["COPIED", "ResumeSession", "why_not_resumable"]

COMPLETIONS_PATH = "/v1/completions"

# Sampling fields a resumed request carries unchanged (vLLM's names; the simulated engine ignores
# the ones it does not model).
COPIED = (
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",  # over prompt and output alike: unchanged by the resume
    "stop_token_ids",  # checked token by token: no match can straddle the resume point
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "cache_salt",  # the prefix cache the first spell filled is only found with the same salt
    "user",
    "vllm_xargs",
)
# Fields that only shape the prompt (its token ids come back from the engine) or carry no meaning for
# generation: allowed, not copied.
_PROMPT_SHAPING = frozenset(
    {
        "messages",
        "prompt",
        "chat_template",
        "chat_template_kwargs",
        "add_generation_prompt",
        "continue_final_message",
        "add_special_tokens",
        "metadata",
        "priority",  # the adapter sets it from the queue level
        "max_tokens",
        "max_completion_tokens",
        "min_tokens",
        "stream",
        "stream_options",
        "parallel_tool_calls",
    }
)
# Fields allowed only when absent, null, empty or at a value that changes nothing.
_HARMLESS_AT: dict[str, tuple[object, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "prompt_logprobs": (),
    "echo": (False,),
    "suffix": (),
    "stop": (),
    "bad_words": (),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": (),
    "seed": (),
    "tools": (),
    "tool_choice": ("none",),
    "functions": (),
    "function_call": ("none",),
    "response_format": ({"type": "text"},),
    "structured_outputs": (),
    "guided_json": (),
    "guided_regex": (),
    "guided_choice": (),
    "guided_grammar": (),
    "return_token_ids": (False,),
    "truncate_prompt_tokens": (),
}
_ALLOWED = frozenset(COPIED) | _PROMPT_SHAPING | frozenset(_HARMLESS_AT)
_CHAT_DELTA_KEYS = frozenset({"role", "content"})
# Rule 2's per-token fast path: a content chunk whose token ids are its only change, in the engine's
# compact JSON (a key cannot occur inside a string value, whose quotes are escaped).
_TOKEN_IDS = re.compile(rb'"token_ids":\[([0-9, ]*)\]')
_PLAIN_DELTA = re.compile(rb'"delta":\{"content":"(?:[^"\\]|\\.)*"\}')
_FAST_KEYS = (b'"finish_reason":null', b'"usage"', b'"error"', b'"prompt_token_ids":[')


def _harmless(name: str, value: object) -> bool:
    if value is None or (isinstance(value, list | dict | str) and not value):
        return True
    # the type too: True is not 1, 1.5 is not a count
    return any(type(value) is type(default) and value == default for default in _HARMLESS_AT[name])


def why_not_resumable(api: str, body: Mapping[str, Any]) -> str | None:
    """Rule 1: None when the call may be stopped and resumed, else why not (for logs and tests)."""
    if api not in ("chat", "completion"):
        return f"{api} calls are not resumed"
    if body.get("stream") is not True:
        return "not streamed"
    if requested_output_tokens(body) is None:
        return "no max_tokens"
    for name, value in body.items():
        if name not in _ALLOWED:
            return f"unknown field {name!r}"
        if name in _HARMLESS_AT and not _harmless(name, value):
            return f"{name} set"
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, Mapping) or any(k != "include_usage" and v for k, v in options.items())
    ):
        return "stream_options beyond include_usage"
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(_text_only(m) for m in messages):
            return "messages with more than text"
    else:
        prompt = body.get("prompt")
        one_prompt = isinstance(prompt, str) or (
            isinstance(prompt, list)
            and bool(prompt)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        )
        if not one_prompt:
            return "not one prompt"
    return None


def _text_only(message: object) -> bool:
    if not isinstance(message, Mapping):
        return False
    content = message.get("content")
    if content is None or isinstance(content, str):
        return not message.get("tool_calls")
    return isinstance(content, list) and all(
        isinstance(part, Mapping) and part.get("type") == "text" for part in content
    )


def _ids(value: object) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return value
    return None


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class ResumeSession:
    """One resumable call's stream across its spells (rules 2-4); ``api`` is ``chat`` or ``completion``."""

    def __init__(self, api: str, path: str, body: Mapping[str, Any]) -> None:
        self.api = api
        self.path = path
        self.body = body
        requested = requested_output_tokens(body)
        if requested is None:
            raise ValueError("a resumable call sets max_tokens (why_not_resumable)")
        self.max_tokens = requested
        self.prompt_ids: list[int] | None = None
        self.generated: list[int] = []
        self.identity: dict[str, Any] | None = None  # id, created, model of the first forwarded chunk
        self.spell = 0  # 0: the original request; n: the n-th resumed request
        self.plain = True  # every chat delta so far had only role and content
        self.finished = False  # a finish_reason was forwarded
        self._spell_base = 0  # tokens generated before the current spell

    @property
    def can_resume(self) -> bool:
        """Whether a stop now could be resumed faithfully (rule 2)."""
        if self.finished or not self.plain:
            return False
        return self.identity is None or self.prompt_ids is not None

    def first_body(self) -> dict[str, Any]:
        """The original request as sent to the engine: with the token ids asked for."""
        return {**self.body, "return_token_ids": True}

    def resume_request(self) -> tuple[str, dict[str, Any]]:
        """Rule 3: the path and body that ask the engine for the rest of the call."""
        if self.identity is None:
            return self.path, self.first_body()
        if self.prompt_ids is None:
            raise ValueError("cannot resume: the engine never said the prompt's token ids")
        done = len(self.generated)
        body: dict[str, Any] = {name: self.body[name] for name in COPIED if name in self.body}
        body["prompt"] = [*self.prompt_ids, *self.generated]
        body["max_tokens"] = max(1, self.max_tokens - done)
        min_tokens = self.body.get("min_tokens")
        if isinstance(min_tokens, int) and min_tokens - done > 0:
            body["min_tokens"] = min_tokens - done
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        body["return_token_ids"] = True
        return COMPLETIONS_PATH, body

    def resumed(self) -> None:
        """The resumed request answered with a stream: its chunks are translated from now on."""
        if self.identity is not None:
            self.spell += 1
            self._spell_base = len(self.generated)

    def rewrite(self, event: bytes) -> bytes | None:
        """One complete SSE event from the engine -> the event for the client (None: dropped)."""
        if self.spell == 0 and self.prompt_ids is not None and self.plain and not self.finished:
            fast = self._fast(event)
            if fast is not None:
                return fast
        data = data_of(event)
        if data is None or data.strip() == b"[DONE]":
            return event
        try:
            payload = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return event
        if not isinstance(payload, dict) or ("error" in payload and "choices" not in payload):
            return event
        out = self._first(payload) if self.spell == 0 else self._translate(payload)
        return None if out is None else _event(out)

    # ----- rule 2 ----------------------------------------------------------------------------------

    def _fast(self, event: bytes) -> bytes | None:
        """Rule 2, fast: a plain content chunk, its token ids taken and nulled without decoding the JSON
        (what :meth:`_first` would do to it, byte for byte but the engine's own formatting); None:
        not such a chunk, decode it."""
        unfinished, usage, error, prompt_ids = (key in event for key in _FAST_KEYS)
        if not unfinished or usage or error or prompt_ids or event.count(b'"token_ids":[') != 1:
            return None
        if self.api == "chat" and _PLAIN_DELTA.search(event) is None:
            return None
        match = _TOKEN_IDS.search(event)
        if match is None:
            return None
        try:
            ids = [int(t) for t in match.group(1).split(b",") if t.strip()]
        except ValueError:
            return None
        self.generated.extend(ids)
        return event[: match.start()] + b'"token_ids":null' + event[match.end() :]

    def _first(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        if self.identity is None and "id" in payload:
            self.identity = {key: payload.get(key) for key in ("id", "created", "model")}
            if self.api == "chat":
                self.prompt_ids = _ids(payload.get("prompt_token_ids"))
        if "prompt_token_ids" in payload:
            payload["prompt_token_ids"] = None
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return payload
        drop = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if self.api == "completion" and "prompt_token_ids" in choice:
                if self.prompt_ids is None:
                    self.prompt_ids = _ids(choice["prompt_token_ids"])
                choice["prompt_token_ids"] = None
            self._take_ids(choice)
            if choice.get("finish_reason") is not None:
                self.finished = True
            delta = choice.get("delta")
            if self.api == "chat" and isinstance(delta, dict):
                if any(value is not None for key, value in delta.items() if key not in _CHAT_DELTA_KEYS):
                    self.plain = False
                drop = not delta and choice.get("finish_reason") is None and "usage" not in payload
        return None if drop else payload

    def _take_ids(self, choice: dict[str, Any]) -> None:
        if "token_ids" in choice:
            ids = _ids(choice["token_ids"])
            if ids is not None:
                self.generated.extend(ids)
            choice["token_ids"] = None

    # ----- rule 4 ----------------------------------------------------------------------------------

    def _translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.identity is not None
        identity = self.identity
        out: dict[str, Any] = {
            "id": identity["id"],
            "object": "chat.completion.chunk" if self.api == "chat" else payload.get("object"),
            "created": identity["created"],
            "model": identity["model"],
        }
        choices = payload.get("choices")
        translated: list[Any] = []
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            self._take_ids(choice)
            if choice.get("finish_reason") is not None:
                self.finished = True
            if self.api == "chat":
                translated.append(self._chat_choice(choice))
            else:
                if "prompt_token_ids" in choice:
                    choice["prompt_token_ids"] = None
                translated.append(choice)
        out["choices"] = translated
        for key, value in payload.items():
            if key not in out and key not in ("prompt_token_ids", "prompt_text"):
                out[key] = value
        usage = payload.get("usage")
        if isinstance(usage, dict):
            out["usage"] = self._call_usage(usage)
        return out

    def _chat_choice(self, choice: Mapping[str, Any]) -> dict[str, Any]:
        text = choice.get("text")
        out: dict[str, Any] = {
            "index": choice.get("index", 0),
            "delta": {"content": text if isinstance(text, str) else ""},
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
        }
        if out["finish_reason"] is not None:
            out["stop_reason"] = choice.get("stop_reason")
        out["token_ids"] = None
        return out

    def _call_usage(self, usage: Mapping[str, Any]) -> dict[str, Any]:
        prompt = len(self.prompt_ids) if self.prompt_ids is not None else 0
        spell = usage.get("completion_tokens")
        spell = spell if isinstance(spell, int) and not isinstance(spell, bool) else len(self.generated)
        completion = self._spell_base + spell
        out = dict(usage)
        out["prompt_tokens"] = prompt
        out["completion_tokens"] = completion
        out["total_tokens"] = prompt + completion
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            cached = details.get("cached_tokens")
            if isinstance(cached, int) and not isinstance(cached, bool):
                out["prompt_tokens_details"] = {**details, "cached_tokens": min(cached, prompt)}
        return out
