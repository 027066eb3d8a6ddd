"""Start and stop autellix services as real processes on loopback (used by the demo and the tests).

Each service runs in its own process group, so stopping it stops any child it made; a service counts as
up when its ``/health`` answers 200. Ports come from the kernel (bind to port 0, read it, close), which is
racy only against other programs grabbing the same port in the next milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (no leftovers after a
    SIGKILL of the parent, which no ``finally`` can handle). A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` from ``/proc`` (Linux); 0.0 when unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceStartError(RuntimeError):
    """A service did not become healthy; the message carries the tail of its log."""


@dataclass
class ServiceProcess:
    """One running service: its command, URL and log file."""

    name: str
    args: list[str]
    url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    die_with_parent: bool = False  # Linux: the kernel sends SIGTERM if the launching process dies
    # False: the child sees none of the caller's AUTELLIX_* variables (a self-contained stack such as the
    # demo must not pick up, say, an exported AUTELLIX_API_KEY meant for another service), only ``env``
    inherit_autellix_env: bool = True

    def start(self, timeout: float = 30.0, health_path: str = "/health") -> ServiceProcess:
        """Launch the process and wait until it is healthy."""
        self.launch()
        return self.wait_healthy(timeout, health_path)

    def launch(self) -> ServiceProcess:
        """Start the process without waiting (start several, then :meth:`wait_healthy` on each)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**self._inherited_env(), **self.env},
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log.close()
        return self

    def _inherited_env(self) -> dict[str, str]:
        if self.inherit_autellix_env:
            return dict(os.environ)
        return {name: value for name, value in os.environ.items() if not name.startswith("AUTELLIX_")}

    def wait_healthy(self, timeout: float = 30.0, health_path: str = "/health") -> ServiceProcess:
        """Poll ``health_path`` until it answers 200; stop the process and raise if it never does."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + health_path, timeout=1.0) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ServiceStartError(f"{self.name} not healthy within {timeout:.0f}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far; 0.0 if unknown (not Linux, gone)."""
        if self.process is None:
            return 0.0
        return process_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Stop at once (SIGKILL to the whole group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)


def autellix_command(subcommand: str, args: Sequence[str]) -> list[str]:
    """The command line that runs ``autellix SUBCOMMAND ARGS`` with this interpreter."""
    return [sys.executable, "-m", "autellix", subcommand, *args]


def start_sim_engine(
    log_dir: Path, args: Sequence[str] = (), name: str = "sim-engine", host: str = "127.0.0.1"
) -> ServiceProcess:
    port = free_port(host)
    service = ServiceProcess(
        name=name,
        args=autellix_command("sim-engine", ["--host", host, "--port", str(port), *args]),
        url=f"http://{host}:{port}",
        log_path=log_dir / f"{name}-{port}.log",
    )
    return service.start()


def service(
    subcommand: str,
    log_dir: Path,
    args: Sequence[str] = (),
    name: str | None = None,
    host: str = "127.0.0.1",
    die_with_parent: bool = False,
    inherit_autellix_env: bool = True,
) -> ServiceProcess:
    """An ``autellix SUBCOMMAND`` service on a free loopback port, not yet launched."""
    port = free_port(host)
    label = name or subcommand
    return ServiceProcess(
        name=label,
        args=autellix_command(subcommand, ["--host", host, "--port", str(port), *args]),
        url=f"http://{host}:{port}",
        log_path=log_dir / f"{label}-{port}.log",
        die_with_parent=die_with_parent,
        inherit_autellix_env=inherit_autellix_env,
    )


def start_sidecar(
    log_dir: Path, engine_url: str, args: Sequence[str] = (), name: str = "sidecar"
) -> ServiceProcess:
    """``autellix sidecar --engine-url ENGINE_URL ARGS`` on a free port, started and healthy."""
    return service("sidecar", log_dir, ["--engine-url", engine_url, *args], name).start()


def start_proxy(
    log_dir: Path, backends: Sequence[str], args: Sequence[str] = (), name: str = "proxy"
) -> ServiceProcess:
    """``autellix proxy --backend B ... ARGS`` on a free port, started and ready (a backend is healthy)."""
    flags = [part for backend in backends for part in ("--backend", backend)]
    proxy = service("proxy", log_dir, [*flags, *args], name).start()
    wait_backends_healthy(proxy)
    return proxy


def wait_backends_healthy(proxy: ServiceProcess, timeout: float = 30.0) -> None:
    """Wait until the proxy's ``GET /ready`` reports every backend healthy (its first health checks)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(proxy.url + "/ready", timeout=1.0) as reply:
                last = reply.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        try:
            backends = json.loads(last).get("backends", {})
        except (ValueError, AttributeError):
            backends = {}
        if backends and all(backends.values()):
            return
        time.sleep(0.1)
    raise ServiceStartError(f"{proxy.name}: backends not all healthy within {timeout:.0f}s: {last[:300]}")


@dataclass
class ServiceGroup:
    """Services started together and stopped together (in reverse order), also on errors."""

    services: list[ServiceProcess] = field(default_factory=list)

    def start_all(
        self, services: Sequence[ServiceProcess], timeout: float = 30.0, health_path: str = "/health"
    ) -> list[ServiceProcess]:
        """Launch every one, then wait for each: start-up costs one slowest start, not their sum."""
        for item in services:
            self.services.append(item.launch())
        for item in services:
            item.wait_healthy(timeout, health_path)
        return list(services)

    def stop_all(self) -> None:
        for item in reversed(self.services):
            item.stop()
        self.services.clear()

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()
