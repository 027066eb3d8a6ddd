"""The generation APIs the proxy serves, one module each: chat, completions, responses, messages.

base.py says what an API is to the call path.

:data:`APIS` lists them; the app adds one route per API, and :func:`error_shape_of` says in which shape
a path's errors go out (the error middleware asks it for every request, matched or not).
"""

from __future__ import annotations

from autellix.api_errors import error_shape_of

from .base import PREFIX_CHARS, Api, CallBody
from .chat import CHAT
from .completions import COMPLETIONS
from .messages import MESSAGES
from .responses import RESPONSES

APIS: tuple[Api, ...] = (CHAT, COMPLETIONS, RESPONSES, MESSAGES)
BY_NAME = {api.name: api for api in APIS}


def parse_call_body(name: str, raw: bytes) -> CallBody:
    """The body of a call to the API named ``name`` (tests and tools; the call path uses ``api.parse``)."""
    return BY_NAME[name].parse(raw)


__all__ = [
    "APIS",
    "BY_NAME",
    "CHAT",
    "COMPLETIONS",
    "MESSAGES",
    "PREFIX_CHARS",
    "RESPONSES",
    "Api",
    "CallBody",
    "error_shape_of",
]
