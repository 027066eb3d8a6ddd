"""Error replies in the shape of the API a route serves: OpenAI's, or Anthropic's on ``/v1/messages``.

Shared by the proxy and the sidecar (both answer both APIs), so that one error reads the same whichever
tier raised it. Pure code: an :class:`ApiError` carries a status, a message and OpenAI's extra fields;
:meth:`ApiError.body` renders it in a route's shape.

1. OpenAI (``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``, everything else):
   ``{"error": {"message", "type", "param", "code"}}``. ``type`` follows OpenAI's vocabulary by status
   (``invalid_request_error`` for 4xx, ``server_error`` and friends for 5xx) unless the raiser names
   one (the sidecar answers in vLLM's words, ``BadRequestError``, with the status as ``code``); ``code``
   is otherwise a short machine name such as ``model_not_found`` or ``invalid_json``.
2. Anthropic (``/v1/messages``, ``/v1/messages/count_tokens``): ``{"type": "error", "error": {"type",
   "message"}}`` with Anthropic's type per status (400 ``invalid_request_error``, also for any other
   4xx; 401 ``authentication_error``; 403 ``permission_error``; 404 ``not_found_error``; 413
   ``request_too_large``; 429 ``rate_limit_error``; 500 ``api_error``; 529 ``overloaded_error``). The
   status is kept as it is: a 503 (no backend) is ``overloaded_error``, any other 5xx ``api_error``.
   The Anthropic SDKs raise by status, so the status is what a client acts on.
3. An error may carry response headers of its own (a 401's ``WWW-Authenticate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ErrorShape = Literal["openai", "anthropic"]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # what OpenAI answers for a missing or wrong key
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",  # what OpenAI answers past a request-count limit (code rate_limit_exceeded)
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_shape_of(path: str) -> ErrorShape:
    """Anthropic's shape on the Messages routes (``/v1/messages`` and below), OpenAI's elsewhere."""
    return "anthropic" if path == "/v1/messages" or path.startswith("/v1/messages/") else "openai"


def openai_error_type(status: int) -> str:
    if status in _OPENAI_TYPES:
        return _OPENAI_TYPES[status]
    return "invalid_request_error" if status < 500 else "server_error"


def anthropic_error_type(status: int) -> str:
    """Rule 2."""
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def openai_body(
    status: int,
    message: str,
    *,
    code: str | int | None = None,
    param: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type or openai_error_type(status),
            "param": param,
            "code": code,
        }
    }


def anthropic_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def error_body(
    status: int,
    message: str,
    *,
    code: str | int | None = None,
    param: str | None = None,
    shape: ErrorShape = "openai",
) -> dict[str, Any]:
    if shape == "anthropic":
        return anthropic_body(status, message)
    return openai_body(status, message, code=code, param=param)


def is_anthropic_error(payload: Any) -> bool:
    """Whether a decoded body is already in Anthropic's shape."""
    return isinstance(payload, Mapping) and payload.get("type") == "error" and "error" in payload


def error_message(payload: Any) -> str | None:
    """The message of an error body in either shape, None if it is neither."""
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        return str(message) if message is not None else None
    return None


class ApiError(Exception):
    """An error answered to the client in the route's shape (rules 1-3)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | int | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self._error_type = error_type

    @property
    def error_type(self) -> str:
        return self._error_type or openai_error_type(self.status)

    def body(self, shape: ErrorShape = "openai") -> dict[str, Any]:
        if shape == "anthropic":
            return anthropic_body(self.status, self.message)
        return openai_body(
            self.status, self.message, code=self.code, param=self.param, error_type=self._error_type
        )


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str, challenge: str) -> ApiError:
    """A 401 as OpenAI words it (``code: invalid_api_key``), with its ``WWW-Authenticate`` challenge."""
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": challenge})
