"""``/admin/backends``: add, remove and list backends while the proxy runs (issue 13 part 2).

1. ``GET /admin/backends`` lists every backend: name, URL, source (discovery.py rule 1), health, this
   process's calls in flight, models, last error.
2. ``POST /admin/backends`` with ``{"name": ..., "url": ...}`` adds one (source ``admin``), checks it
   once and answers 201 with it (``healthy`` says whether it passed); a name in use is a 409, a bad
   name or URL a 400 (the rules of ``--backend ID=URL``).
3. ``DELETE /admin/backends/{name}`` removes any backend (static, DNS or admin); calls in flight on it
   finish (backends.py rule 6). A DNS backend still in its name's answer returns at the next
   resolution: remove it from DNS (scale the StatefulSet) instead. Unknown name: 404.
4. Who may. With API keys on, any accepted key (the auth middleware has checked it). With keys off,
   only a caller on loopback (403 otherwise): an open admin endpoint reachable from the network would
   let anyone send every client's prompts to a server of their choosing. ``X-Forwarded-For`` is not
   believed (any client can send it).
5. Scope. A change applies to the process that receives it, and lasts until it stops: with several
   replicas (or ``--workers``) send it to each, or use ``--backend-dns``, which every replica follows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from autellix.api_errors import ApiError, bad_request
from autellix.auth import is_loopback_host
from autellix.jsonbody import JsonBodyError, parse_json

from .backends import Backend, BackendPool
from .config import parse_backend
from .discovery import ADMIN


def backend_json(backend: Backend) -> dict[str, Any]:
    return {
        "name": backend.engine_id,
        "object": "backend",
        "url": backend.url,
        "source": backend.source,
        "healthy": backend.healthy,
        "in_flight": backend.in_flight,
        "models": sorted(backend.models),
        "last_error": backend.last_error,
    }


class BackendAdmin:
    def __init__(self, pool: BackendPool, keys_enabled: bool) -> None:
        self.pool = pool
        self.keys_enabled = keys_enabled

    def _allowed(self, request: web.Request) -> None:
        """Rule 4."""
        if not self.keys_enabled and not is_loopback_host(request.remote or ""):
            raise ApiError(
                403,
                "The admin endpoints of a proxy without API keys answer loopback callers only; start the "
                "proxy with --api-key to administer it remotely",
                code="admin_forbidden",
            )

    async def list(self, request: web.Request) -> web.Response:
        self._allowed(request)
        return web.json_response({"object": "list", "data": [backend_json(b) for b in self.pool.backends]})

    async def add(self, request: web.Request) -> web.Response:
        self._allowed(request)
        try:
            data = parse_json(await request.read())
        except JsonBodyError as exc:
            raise bad_request(str(exc), code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("Request body must be a JSON object", code="invalid_json")
        for field in ("name", "url"):
            if not isinstance(data.get(field), str) or not data[field].strip():
                raise bad_request(f"'{field}' must be a non-empty string", param=field, code="invalid_type")
        unknown = sorted(set(data) - {"name", "url"})
        if unknown:
            raise bad_request(
                f"Unknown field(s): {', '.join(unknown)}", param=unknown[0], code="invalid_field"
            )
        name = data["name"].strip()
        if "=" in name or "://" in name:
            raise bad_request("'name' must not contain '=' or '://'", param="name", code="invalid_name")
        try:
            engine_id, url = parse_backend(f"{name}={data['url'].strip()}")
        except ValueError as exc:
            raise bad_request(str(exc), param="url", code="invalid_backend") from None
        if engine_id in self.pool.by_id:
            raise ApiError(409, f"A backend named {engine_id!r} exists", code="backend_exists", param="name")
        backend = self.pool.add(engine_id, url, ADMIN)
        await self.pool.check_new(backend)
        return web.json_response(backend_json(backend), status=201)

    async def remove(self, request: web.Request) -> web.Response:
        self._allowed(request)
        name = request.match_info["name"]
        backend = self.pool.remove(name)
        if backend is None:
            raise ApiError(404, f"No backend named {name!r}", code="backend_not_found", param="name")
        return web.json_response({**backend_json(backend), "deleted": True})
