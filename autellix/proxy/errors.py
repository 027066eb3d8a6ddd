"""OpenAI-style errors of the proxy: ``{"error": {"message", "type", "param", "code"}}`` with a status.

Every failure a client can cause or meet becomes an :class:`ApiError`; the app's middleware turns it
into JSON, so no handler builds an error body by hand. Types follow OpenAI's vocabulary by status
(``invalid_request_error`` for 4xx, ``server_error`` and friends for 5xx); ``code`` is a short machine
name such as ``model_not_found`` or ``invalid_json``. An error may carry response headers of its own
(a 401's ``WWW-Authenticate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # what OpenAI answers for a missing or wrong key
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class ApiError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    @property
    def error_type(self) -> str:
        return error_type(self.status)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if status < 500 else "server_error"


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str, challenge: str) -> ApiError:
    """A 401 as OpenAI words it (``code: invalid_api_key``), with its ``WWW-Authenticate`` challenge."""
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": challenge})
