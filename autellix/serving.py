"""The one way every autellix service (proxy, sidecar, simulated engine) runs its aiohttp app.

1. ``handler_cancellation``: a client that disconnects cancels its handler, so the call leaves our
   queue or is aborted upstream (the engine aborts a request whose connection closes).
2. The bound port is read back from the runner (``--port 0`` picks a free one) and printed as
   ``autellix NAME listening on http://HOST:PORT`` on stdout, which tools and tests may parse.
3. SIGINT and SIGTERM start a graceful stop: the listener closes, in-flight responses (streams
   included) get up to ``shutdown_timeout`` seconds to finish, then the app's cleanup contexts run.
4. A port that cannot be bound is one line on stderr and exit status 1.
5. aiohttp's own answers (a malformed request, a head over its limits, an error that escaped the
   app) are JSON in the service's error shape, under the head limits of autellix/http_limits.py.
6. The event loop is uvloop's when it is importable (a dependency; roughly halves the loop's own cost
   per request against asyncio's pure-Python loop) unless ``AUTELLIX_EVENT_LOOP=asyncio`` asks for the
   standard one; which loop runs is logged at start-up (info).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from autellix.auth import KeyRing, read_key_file
from autellix.http_limits import ErrorBody, HttpLimits, JsonErrorRunner, default_error_body

LOOP_ENV = "AUTELLIX_EVENT_LOOP"
log = logging.getLogger("autellix.serving")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def serve_app(
    app: web.Application,
    name: str,
    host: str,
    port: int,
    *,
    on_started: Callable[[int], None] | None = None,
    shutdown_timeout: float = 60.0,
    error_body: ErrorBody = default_error_body,
    limits: HttpLimits | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; ``on_started(port)`` runs once the socket is bound;
    ``error_body(status, message)`` shapes aiohttp's own error answers (rule 5); ``reuse_port``: the
    port is shared with other processes that bind it so (SO_REUSEPORT; ``autellix proxy --workers``)."""
    runner = JsonErrorRunner(
        app,
        error_body=error_body,
        limits=limits,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        addresses = runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        if on_started is not None:
            on_started(bound)
        print(f"autellix {name} listening on http://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Rule 6: uvloop's loop factory, or None for asyncio's own (``choice`` defaults to the env)."""
    wanted = (choice if choice is not None else os.environ.get(LOOP_ENV, "")).strip().lower()
    if wanted not in ("", "auto", "uvloop", "asyncio"):
        raise ValueError(f"{LOOP_ENV} must be auto, uvloop or asyncio, got {wanted!r}")
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_service(
    name: str, host: str, port: int, log_level: str, serve: Callable[[], Coroutine[Any, Any, None]]
) -> int:
    """Run one service's ``serve()`` coroutine to completion; the exit status for the CLI."""
    configure_logging(log_level)
    try:
        factory = loop_factory()
    except (ValueError, ImportError) as exc:
        print(f"autellix {name}: error: {exc}", file=sys.stderr)
        return 2
    log.info("autellix %s: event loop %s", name, "uvloop" if factory is not None else "asyncio")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve())
    except OSError as exc:
        print(
            f"autellix {name}: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


async def reload_keys(ring: KeyRing, path: str, logger: logging.Logger) -> None:
    """Re-read an ``--api-key-file`` into ``ring`` (proxy and sidecar alike); a file that cannot be used
    keeps the keys in force (auth.py rule 7), and says so once."""
    try:
        from_file: tuple[str, ...] | ValueError = await asyncio.to_thread(read_key_file, path)
    except ValueError as exc:
        from_file = exc
    outcome = ring.reload(from_file)
    if outcome.warning is not None:
        logger.warning("%s; the API keys in force stay", outcome.warning)
    if outcome.changed:
        logger.info("API keys reloaded from %s: %d accepted", path, len(ring.keys))
