"""The sidecar's deciding modules are pure: no IO, clock, threads or global randomness (DESIGN.md §2).

Importing them in a fresh interpreter must not load an IO or clock module either (only the shells,
sidecar.py, relay.py, gate.py and upstream.py, may).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import autellix.engine_adapters as engine_adapters
from tests.unit.test_scheduling_purity import FORBIDDEN, imported_roots

PURE = ("admission", "accounting", "apis", "sse", "resume", "base", "vllm", "sglang", "sim")
PACKAGE_DIR = Path(engine_adapters.__file__).parent


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_no_io_clock_or_randomness(name: str) -> None:
    assert imported_roots(PACKAGE_DIR / f"{name}.py") & (FORBIDDEN | {"__import__"}) == set()


def test_loading_the_pure_modules_loads_no_io() -> None:
    modules = ", ".join(f"autellix.engine_adapters.{name}" for name in PURE)
    script = f"import sys; import {modules}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert loaded & {"aiohttp", "redis", "prometheus_client", "httpx"} == set()
