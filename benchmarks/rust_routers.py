"""The Rust routers users would pick instead of autellix's proxy, for ``bench_proxy_overhead.py``.

``vllm-router`` and ``smg`` (both from PyPI) are installed into the benchmark's own virtual environment,
``~/.cache/autellix/bench-routers-venv`` by default, never into the project's ``.venv``: they are a
measuring stick, not a dependency. The environment is made on first use (``python -m venv`` and
``pip install vllm-router smg``, about 260 MB) and reused while both executables exist. A failed
installation or a router that does not start is reported in one line and the benchmark goes on
without it.

Each router runs as its own process on loopback, round-robin over the one instant backend, with
warning-level logs (no per-request log lines, like the proxy) and its Prometheus listener on a free
loopback port (both default to port 29000, smg on every interface, so the two would collide). Every
other setting keeps its default, since none acts at the benchmark's load and error rate:
- admission: vllm-router admits 32,768 concurrent requests (and as many per second) before its queue
  of 100 takes over; smg admits 1,024 per core (at least 4,096) and has no rate limit; the benchmark
  keeps at most 32 in flight;
- retries (vllm-router's default, smg's 5) and circuit breakers act only on failed calls; health
  checks run every 60 s; smg polls the worker's load every 10 s (the backend answers 404);
- smg closes upstream connections idle for 3 s, so each of its runs after other targets' starts with a
  cold pool; the warm-up at the run's concurrency reopens them before the measured window, as it does
  for every target;
- smg serves only the first model a worker lists in ``/v1/models`` (404 ``model_not_found`` for the
  others), so the benchmark uses one model and selects backend behaviour by the prompt.

A target counts as ready when it answers each of the benchmark's request bodies with 200, which also
covers the routers' own discovery of the backend's ``/v1/models``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autellix.launch import ServiceProcess, ServiceStartError, free_port

DEFAULT_VENV = Path.home() / ".cache" / "autellix" / "bench-routers-venv"
PACKAGES = ("vllm-router", "smg")
ROUTERS = ("vllm-router", "smg")
INSTALL_TIMEOUT = 1800.0


@dataclass(frozen=True, slots=True)
class RouterEnv:
    """The benchmark's own environment holding the routers' executables."""

    venv: Path
    versions: dict[str, str]

    def executable(self, name: str) -> Path:
        return self.venv / "bin" / name


def _has_routers(venv: Path) -> bool:
    return all((venv / "bin" / name).is_file() for name in ROUTERS)


def _versions(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        f"print(json.dumps({{p: m.version(p) for p in {list(PACKAGES)!r}}}))"
    )
    try:
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        versions: dict[str, str] = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return versions


def ensure_router_env(venv: Path, python: str, log_path: Path) -> tuple[RouterEnv | None, str]:
    """The environment at ``venv``, made and filled on first use; ``(None, why)`` if that fails.
    ``python`` makes the environment (``python -m venv``); the one it runs in is never touched."""
    if venv.resolve() == Path(sys.prefix).resolve():
        return None, f"{venv} is the running environment; the routers get their own (--routers-venv)"
    if not _has_routers(venv):
        print(f"installing {' and '.join(PACKAGES)} into {venv} (first use; log in {log_path})", flush=True)
        steps = (
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PACKAGES],
        )
        try:
            venv.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log:
                for step in steps:
                    subprocess.run(
                        step, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT, check=True
                    )
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"installing the Rust routers into {venv} failed ({exc}); see {log_path}"
        if not _has_routers(venv):
            return None, f"installed, but {venv}/bin lacks {' or '.join(ROUTERS)}; see {log_path}"
    return RouterEnv(venv, _versions(venv)), f"Rust routers from {venv}"


def router_command(name: str, executable: Path, port: int, worker_url: str, metrics_port: int) -> list[str]:
    """The command line of one router on loopback, round-robin over ``worker_url`` (see module doc)."""
    launch = [str(executable)] if name == "vllm-router" else [str(executable), "launch"]
    level = "warning" if name == "vllm-router" else "warn"
    return [
        *launch,
        *("--host", "127.0.0.1", "--port", str(port), "--worker-urls", worker_url),
        *("--policy", "round_robin", "--log-level", level),
        *("--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port)),
    ]


def launch_router(name: str, env: RouterEnv, worker_url: str, log_dir: Path) -> ServiceProcess:
    """Start one router (not yet ready: :func:`wait_answering` next)."""
    port = free_port()
    command = router_command(name, env.executable(name), port, worker_url, free_port())
    service = ServiceProcess(
        name=name,
        args=command,
        url=f"http://127.0.0.1:{port}",
        log_path=log_dir / f"{name}.log",
        env={"NO_COLOR": "1"},
        die_with_parent=True,
    )
    return service.launch()


def wait_answering(
    service: ServiceProcess, bodies: Sequence[Mapping[str, object]], timeout: float = 60.0
) -> None:
    """Poll until ``service`` answers 200 to a chat completion with each of ``bodies``; raise
    :class:`ServiceStartError` (after stopping it) if it exits or does not within ``timeout``."""
    assert service.process is not None, "launch first"
    deadline = time.monotonic() + timeout
    pending = list(bodies)
    last = ""
    while pending and time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceStartError(
                f"{service.name} exited with {service.process.returncode}: {service.log_tail(5)}"
            )
        request = urllib.request.Request(
            service.url + "/v1/chat/completions",
            data=json.dumps(pending[0]).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2.0) as reply:
                reply.read()
                if reply.status == 200:
                    pending.pop(0)
                    continue
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    if pending:
        service.stop()
        raise ServiceStartError(
            f"{service.name} did not answer model {pending[0]!r} in {timeout:.0f}s: {last}"
        )


def start_routers(
    env: RouterEnv, worker_url: str, log_dir: Path, bodies: Sequence[Mapping[str, object]]
) -> list[tuple[str, ServiceProcess]]:
    """Every router that starts and answers; one printed line for each that does not."""
    launched = [(name, launch_router(name, env, worker_url, log_dir)) for name in ROUTERS]
    ready = []
    for name, service in launched:
        try:
            wait_answering(service, bodies)
        except ServiceStartError as exc:
            print(f"{name}: not started, left out of the comparison ({exc}); log in {service.log_path}")
            continue
        ready.append((name, service))
    return ready
