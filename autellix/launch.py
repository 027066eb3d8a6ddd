"""Start and stop autellix services as real processes on loopback (used by the demo and the tests).

Each service runs in its own process group, so stopping it stops any child it made; a service counts as
up when its ``/health`` answers 200. Ports come from the kernel (bind to port 0, read it, close), which is
racy only against other programs grabbing the same port in the next milliseconds.
"""

from __future__ import annotations

import contextlib
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

    def start(self, timeout: float = 30.0, health_path: str = "/health") -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        log.close()
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
