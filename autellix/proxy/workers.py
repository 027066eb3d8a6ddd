"""``autellix proxy --workers N``: N proxy processes on one port, supervised by this one (issue 13 part 5).

One proxy process is one event loop on one core. With ``--workers N`` this process binds nothing
itself: it starts N workers (``multiprocessing``'s spawn: fresh interpreters, no inherited loop or
sockets), each a whole proxy that binds the same host and port with ``SO_REUSEPORT``, so the kernel
spreads new connections across them.

1. Shared state. Workers share programs only through Redis (each has its own memory), so ``--workers``
   above 1 needs ``--redis-url`` (a settings error otherwise, exit status 2). Each worker is a replica
   of its own in the table: its replica id is ``<--replica-id>-<index>`` (random per process without
   one), and so are its call ids and its lease.
2. Same settings. Every worker gets the parent's settings; a port of 0 is chosen once, here, so all
   bind the same one. A random program id secret (``--require-signed-ids`` without a secret,
   tenants.py rule 5) is drawn here once, so an id one worker signed verifies on the others.
3. Supervision. SIGTERM or SIGINT to the parent is passed to every worker as SIGTERM, and the parent
   waits for them to drain (each stops as a single proxy does) before it exits 0. A worker that exits
   on its own is a failure: it is reported with its exit status, the others are stopped, and the
   parent exits 1. Not restarted on purpose: a crash loop inside one pod would stay invisible, while
   a container that exits is restarted (with back-off) and counted by Kubernetes or systemd.
4. Workers die with the parent (Linux: PR_SET_PDEATHSIG), so a SIGKILL of the parent leaves none.
5. Per process. ``/metrics`` and ``/admin/backends`` answer for the worker the connection reached; a
   Prometheus scrape of the port sees one worker at a time (give each pod one worker per container,
   or read the Redis-backed figures, when per-process series matter). ``/health`` names the pid and
   replica id that answered.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import sys
from multiprocessing.process import BaseProcess
from types import FrameType

from autellix.launch import free_port
from autellix.serving import configure_logging

from .config import ProxySettings

log = logging.getLogger("autellix.proxy.workers")
STOP_TIMEOUT = 75.0  # a worker drains for up to its shutdown timeout (60 s) before it is killed


def worker_settings(settings: ProxySettings, index: int) -> ProxySettings:
    """Rules 1-2: worker ``index``'s settings (the port and any random secret are fixed by then)."""
    replica = f"{settings.replica_id}-{index}" if settings.replica_id else None
    return settings.model_copy(update={"replica_id": replica})


def shared_settings(settings: ProxySettings) -> ProxySettings:
    """Rule 2: what every worker must agree on, drawn once."""
    update: dict[str, object] = {}
    if settings.port == 0:
        update["port"] = free_port(settings.host)
    if (
        settings.require_signed_ids
        and settings.program_id_secret is None
        and not settings.program_id_secret_file
    ):
        update["program_id_secret"] = secrets.token_hex(32)
    return settings.model_copy(update=update)


def _worker_main(settings: ProxySettings) -> None:
    """The worker process: rule 4, then one proxy on the shared port."""
    from autellix.launch import _die_with_parent

    from .app import run_worker

    _die_with_parent()
    sys.exit(run_worker(settings))


def supervise(settings: ProxySettings) -> int:
    """Rules 2-3: start the workers, wait, stop them all; the exit status for the CLI."""
    configure_logging(settings.log_level)
    settings = shared_settings(settings)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    workers: list[BaseProcess] = []
    for index in range(settings.workers):
        process = context.Process(
            target=_worker_main, args=(worker_settings(settings, index),), name=f"autellix-proxy-{index}"
        )
        process.start()
        workers.append(process)
    log.info("proxy: %d workers on %s:%d (pids %s)", len(workers), settings.host, settings.port,
             ", ".join(str(w.pid) for w in workers))  # fmt: skip
    status = 0
    while not stopping:
        ended = multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.5)
        if ended and not stopping:
            for worker in workers:
                if worker.sentinel in ended:
                    worker.join(5)  # reap it, so that its exit status is known
                    log.error("proxy worker %s (pid %s) exited with status %s: stopping the others",
                              worker.name, worker.pid, worker.exitcode)  # fmt: skip
            status = 1
            break
    _stop_all(workers)
    return status


def _stop_all(workers: list[BaseProcess]) -> None:
    for worker in workers:
        if worker.exitcode is None and worker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(STOP_TIMEOUT)
        if worker.exitcode is None:
            log.warning("proxy worker %s (pid %s) did not stop: killed", worker.name, worker.pid)
            worker.kill()
            worker.join(5)
