"""The fuzz tier's fleet: a simulated engine, its sidecar and a proxy, started once per module.

Every property is checked against all three services (each answers its own routes), and a program
created before any example runs is the witness that no bad request touches another program's state.
The number of examples per property is ``AUTELLIX_FUZZ_EXAMPLES`` (default: small, so that the whole
tier runs in about a minute on two cores; ``scripts/fuzz.sh`` runs many more).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from autellix.launch import ServiceGroup, service, wait_backends_healthy

EXAMPLES = int(os.environ.get("AUTELLIX_FUZZ_EXAMPLES", "8"))
WITNESS = "fuzz-witness-program"


@dataclass(frozen=True)
class Fleet:
    engine: str
    sidecar: str
    proxy: str

    def urls(self) -> dict[str, str]:
        return {"engine": self.engine, "sidecar": self.sidecar, "proxy": self.proxy}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5.0) as reply:
        return json.loads(reply.read())


def witness_state(fleet: Fleet) -> dict[str, Any]:
    """The witness program's counters (what a bad request must never change)."""
    state = get_json(f"{fleet.proxy}/v1/programs/{WITNESS}")
    return {
        k: state[k]
        for k in ("service_plas", "service_atlas", "calls_started", "calls_completed", "output_tokens")
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("fuzz")
    with ServiceGroup() as group:
        engine = service("sim-engine", logs, ["--profile", "unit", "--time-scale", "0.001"])
        group.start_all([engine])
        sidecar = service("sidecar", logs, ["--engine-url", engine.url, "--max-call-seconds", "20"])
        group.start_all([sidecar])
        # the witness must outlive a long campaign (scripts/fuzz.sh runs past the default TTL of 600 s;
        # 3600 s, the stuck TTL, is the most a program TTL may be)
        proxy_flags = ["--backend", f"s0={sidecar.url}", "--max-call-seconds", "20", "--program-ttl", "3600"]
        proxy = service("proxy", logs, proxy_flags)
        group.start_all([proxy])
        wait_backends_healthy(proxy)
        request = urllib.request.Request(
            f"{proxy.url}/v1/programs",
            data=json.dumps({"id": WITNESS}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5.0).close()
        call = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions",
            data=json.dumps(
                {"model": "sim-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Program-Id": WITNESS},
            method="POST",
        )
        urllib.request.urlopen(call, timeout=10.0).close()
        yield Fleet(engine.url, sidecar.url, proxy.url)
