"""Reading a request's JSON body so that no shape of it can hurt the service (proxy, sidecar, sim engine).

Theory of operation
-------------------
Every service of ours parses the bodies it is sent with :func:`parse_json`; a body it cannot use is a
:class:`JsonBodyError`, which each shell answers as a 400 in its API's error shape. The standard
library's parser is fast and correct, but three kinds of input make it raise something other than a
``JSONDecodeError``, and each used to reach the services as a 500:

1. Bytes that are not UTF-8 (``UnicodeDecodeError``). A UTF-8 byte-order mark is accepted, as vLLM
   accepts it.
2. Nesting deeper than the interpreter's recursion limit (``RecursionError``; a 50,000-level array is
   100 KB). Nesting below that limit but deep enough that a later recursive walk of the body (an
   encoder, a validator) would hit the limit is refused too: at most :data:`MAX_DEPTH` levels, which
   is far beyond any real request (a JSON schema in ``tools`` or ``response_format`` nests a dozen
   levels) and far below the recursion limit (1000), so every later walk has room.
3. Integers longer than ``sys.get_int_max_str_digits()`` (4300 digits; ``ValueError``), which Python
   refuses to convert since 3.11 because converting them is quadratic.

``NaN``, ``Infinity`` and ``-Infinity`` are parsed (as Python's parser and vLLM's do) and left to the
field checks, which refuse non-finite numbers where a number matters. Duplicate keys keep the last
value, as every JSON parser of the OpenAI ecosystem does.

The depth check costs nothing for ordinary bodies: it walks the parsed value only when the body holds
more opening brackets than :data:`MAX_DEPTH`, and then visits containers only.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 256


class JsonBodyError(ValueError):
    """A body that is not a usable JSON document; the message says why, for the client."""


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``raw``, or :class:`JsonBodyError` (rules 1-3)."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonBodyError(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise JsonBodyError(f"Request body nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # an integer beyond the interpreter's digit limit (rule 3)
        raise JsonBodyError(f"Request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_exceeds(value, max_depth):
        raise JsonBodyError(f"Request body nests deeper than {max_depth} levels")
    return value


def nesting_exceeds(value: Any, max_depth: int) -> bool:
    """Whether ``value`` has containers nested more than ``max_depth`` deep (iterative: no recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


__all__ = ["MAX_DEPTH", "JsonBodyError", "nesting_exceeds", "parse_json"]
