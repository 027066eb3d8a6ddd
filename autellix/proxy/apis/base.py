"""What every API the proxy serves has in common: the parsed call, the JSON checks, the API descriptor.

An :class:`Api` is one generation endpoint as the call path sees it (one module per API in this
package: ``chat.py``, ``completions.py``): how its body is read (:class:`CallBody`, 400s for bodies it
cannot use), in which shape its errors go out (autellix/api_errors.py), how its stream ends (the line
that announces the last event, sse.py's :class:`~autellix.proxy.sse.StreamEnd`) and what a stream that
breaks off ends with. The call path is the same for every API; only these differ.

Rules shared by every API's body (each module states its own on top):

1. The body must be a JSON object (``invalid_json`` otherwise; autellix/jsonbody.py refuses bodies that
   are not UTF-8, nest deeper than 256 levels or hold integers of over 4300 digits).
2. Typed when present (null is accepted as "absent", as OpenAI does), booleans never count as
   integers; a wrong type is a 400 naming the field (``invalid_type``).
3. ``model`` is optional as in vLLM (an engine then serves its own model); whether the fleet serves a
   named model is the app's check (404), since only it knows the backends.
4. The input-token estimate (:mod:`..tokens`) and a routing prefix (the first :data:`PREFIX_CHARS`
   characters of the prompt text, for prefix-affinity routers) come out of every body.
5. A client's own ``priority`` field never reaches an engine: the body is re-encoded without it
   (``CallBody.upstream``), the only case where the proxy changes the bytes. Stripped, not bounded:
   the engine's priority is how the sidecar enforces the program-level order (it sets the field from
   the call's queue level), so any client value, bounded or not, would let one caller reorder its own
   calls against everyone else's (``-100`` would jump every queue of a priority-policy engine behind a
   proxy without a sidecar; a bound of 0..7 would still let it claim level 0 for ever). A client that
   sends it is served as if it had not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from autellix.api_errors import ErrorShape, bad_request
from autellix.jsonbody import JsonBodyError, parse_json

PREFIX_CHARS = 4096


@dataclass(frozen=True, slots=True)
class CallBody:
    api: str  # the Api's name
    model: str | None
    stream: bool
    input_tokens: int
    metadata: Mapping[str, Any] | None
    prefix: str
    # where the API's own fields name the program (identity.py rule 1e): (source, id)
    program_hint: tuple[str, str] | None = None
    chain: str | None = None  # the stored response this call continues (Responses' previous_response_id)
    keeps_program: bool = False  # a program the proxy names outlives the call (its reply may be chained)
    upstream: bytes | None = None  # the body to forward in place of the client's bytes (rule 5)


class ReplyIds(Protocol):
    """Watches a streamed reply for the id the engine gave it (Responses: ``response.created``)."""

    def feed(self, segment: bytes) -> str | None:
        """Take the next bytes sent to the client; the id once it is seen (then None again)."""
        ...


@dataclass(frozen=True, slots=True)
class Api:
    """One generation endpoint (see the module doc)."""

    name: str  # "chat", "completion", ...: metric labels and the loadgen's --api
    path: str  # the route, forwarded unchanged to the backend
    error_shape: ErrorShape
    parse: Callable[[bytes], CallBody]
    stream_end: re.Pattern[bytes]  # the line that starts the stream's last event (sse.StreamEnd)
    stream_marker: bytes  # bytes that line always contains (a cheap test before the pattern)
    stream_error: Callable[[str], bytes]  # what a stream that broke off ends with, in this API's words
    reply_id: Callable[[bytes], str | None] | None = None  # the id of a whole reply the engine stores
    stream_ids: Callable[[], ReplyIds] | None = None  # the same for a streamed reply


def load_object(raw: bytes) -> dict[str, Any]:
    """Rule 1."""
    try:
        data = parse_json(raw)
    except JsonBodyError as exc:
        raise bad_request(str(exc), code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object", code="invalid_json")
    return data


def without_priority(data: Mapping[str, Any]) -> bytes | None:
    """Rule 5: the body to forward instead of the client's, or None when it sets no ``priority``."""
    if "priority" not in data:
        return None
    return json.dumps({k: v for k, v in data.items() if k != "priority"}).encode()


def typed(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """Rule 2 for one field: its value, or None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise bad_request(f"'{key}' must be {what}, got a boolean", param=key, code="invalid_type")
    if not isinstance(value, kind):
        raise bad_request(
            f"'{key}' must be {what}, got {type(value).__name__}", param=key, code="invalid_type"
        )
    return value


def text_prefix(texts: list[str]) -> str:
    """Rule 4: the first :data:`PREFIX_CHARS` characters of the prompt's texts, in order."""
    parts: list[str] = []
    size = 0
    for text in texts:
        parts.append(text)
        size += len(text)
        if size >= PREFIX_CHARS:
            break
    return "".join(parts)[:PREFIX_CHARS]
