"""Which program and thread a call belongs to (DESIGN.md §3), read from headers and the body.

Theory of operation
-------------------
A program is whatever the client says it is; the proxy only picks the id out of the request.

1. Program id, first present (non-empty) source wins:
   a. ``X-Program-Id`` (ours; what :mod:`autellix.proxy.client` sends),
   b. ``metadata.program_id`` in the JSON body,
   c. a session header that common clients send by themselves, in this order:
      ``X-Session-Id`` (generic), ``X-Claude-Code-Session-Id`` (Claude Code, one UUID per session,
      since v2.1.86), ``Session-Id`` and ``Session_Id`` (Codex CLI, new and old spelling),
      ``X-Opencode-Session`` (opencode, and what OpenCode-compatible clients are asked to send),
      ``X-Session-Affinity`` (session-affinity gateways),
   d. ``metadata.session_id`` in the body,
   e. what the API's own fields say (apis/): Responses' ``conversation``, Messages'
      ``metadata.user_id`` (Claude Code sends its session there too).
   A Responses call that continues a stored reply (``previous_response_id``) without any of these
   joins that reply's program: the call path looks it up (calls.py rule 9), not this module.
   The OpenAI Agents SDK sends no session id of its own; give it ``X-Program-Id`` through
   ``ModelSettings.extra_headers`` (or use the client helper).
2. Thread id: ``X-Thread-Id``, else ``metadata.thread_id``. Threads only matter to ATLAS (parallel
   calls of one program); a missing thread is the program's main thread.
3. No program id at all: the call is a program of its own (``program_id`` None here; the proxy names
   it after the call id and ends it when the call ends).
4. An id is at most :data:`MAX_ID_LENGTH` characters and printable (no control characters, no
   undecodable bytes); the first source found is checked and a bad one is an error (400), never
   skipped for a later source, so a client learns about its mistake.

5. Kind: ``X-Program-Kind``, else ``metadata.program_kind``: what the program is, for the program-level
   metrics only. A label's values must stay few, so a kind outside the operator's list is ``other``
   (and no kind at all leaves the program's kind unsaid: ``unspecified`` on the metrics).

The paper's prototype did not authenticate program ids (reference.md §1, stated limits); this module
does not either: it only reads the id. With API keys the call path namespaces it per key and may
require it to be signed (tenants.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autellix.engine_adapters.protocol import MAX_ID_LENGTH

PROGRAM_HEADER = "X-Program-Id"
KIND_HEADER = "X-Program-Kind"
THREAD_HEADER = "X-Thread-Id"
SESSION_HEADERS = (
    "X-Session-Id",
    "X-Claude-Code-Session-Id",
    "Session-Id",
    "Session_Id",
    "X-Opencode-Session",
    "X-Session-Affinity",
)


class IdentityError(ValueError):
    """An id that breaks rule 4; ``param`` names where it came from."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Identity:
    program_id: str | None  # None: a program of one call (rule 3)
    thread_id: str | None
    source: str  # where the program id came from, e.g. "header:X-Program-Id", or "none"


def check_id(value: str, where: str) -> str:
    """Rule 4 for one value."""
    if len(value) > MAX_ID_LENGTH:
        raise IdentityError(f"{where} must be at most {MAX_ID_LENGTH} characters, got {len(value)}", where)
    if not value.isprintable():
        raise IdentityError(f"{where} must contain printable characters only", where)
    return value


def _from_metadata(metadata: Mapping[str, Any] | None, key: str) -> str | None:
    if metadata is None:
        return None
    value = metadata.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IdentityError(f"metadata.{key} must be a string", f"metadata.{key}")
    return check_id(value, f"metadata.{key}")


def _from_header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    return check_id(value, name)


def extract_identity(
    headers: Mapping[str, str],
    metadata: Mapping[str, Any] | None,
    hint: tuple[str, str] | None = None,
) -> Identity:
    """Rules 1-4. ``headers`` must look names up case-insensitively (as aiohttp's do); ``hint`` is rule
    1e's ``(source, id)``."""
    thread = _from_header(headers, THREAD_HEADER) or _from_metadata(metadata, "thread_id")
    program = _from_header(headers, PROGRAM_HEADER)
    if program is not None:
        return Identity(program, thread, f"header:{PROGRAM_HEADER}")
    program = _from_metadata(metadata, "program_id")
    if program is not None:
        return Identity(program, thread, "body:metadata.program_id")
    for name in SESSION_HEADERS:
        program = _from_header(headers, name)
        if program is not None:
            return Identity(program, thread, f"header:{name}")
    program = _from_metadata(metadata, "session_id")
    if program is not None:
        return Identity(program, thread, "body:metadata.session_id")
    if hint is not None and hint[1]:
        source, value = hint
        return Identity(check_id(value, source.removeprefix("body:")), thread, source)
    return Identity(None, thread, "none")


def program_kind(
    headers: Mapping[str, str], metadata: Mapping[str, Any] | None, allowed: frozenset[str]
) -> str | None:
    """Rule 5: the kind a call names, ``"other"`` when it is not in ``allowed``, None when unsaid."""
    value: Any = headers.get(KIND_HEADER)
    if not value and metadata is not None:
        value = metadata.get("program_kind")
    if not value or not isinstance(value, str):
        return None
    kind = value.strip().lower()
    return kind if kind in allowed else "other"
