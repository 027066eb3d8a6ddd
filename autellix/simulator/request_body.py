"""A request body of the simulated engine's Messages and Responses routes, read into its pydantic model.

vLLM validates these routes' bodies with pydantic and words every failure as a 400 in OpenAI's shape
(``type: "Bad Request"``) naming the top-level field, ``body.<field>: <pydantic's message>``; a body that
is not JSON, or not a JSON object, is named ``body``. ``parse_body`` answers the same way, and reads the
bytes with autellix/jsonbody.py, so that too deep a body or too long a number is a 400 as well.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from autellix.jsonbody import JsonBodyError, parse_json
from autellix.simulator.openai_api import ApiError

Model = TypeVar("Model", bound=BaseModel)


def parse_body(raw: bytes, model: type[Model]) -> Model:
    try:
        data = parse_json(raw)
    except JsonBodyError as exc:
        raise ApiError(f"JSON decode error: {exc}", error_type="Bad Request", param="body") from exc
    if not isinstance(data, dict):
        raise ApiError("Request body must be a JSON object", error_type="Bad Request", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("body", *first.get("loc", ())[:1]))
        raise ApiError(f"{where}: {first['msg']}", error_type="Bad Request", param=where) from exc
