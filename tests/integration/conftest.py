"""Fixtures that start real autellix processes on loopback and stop them after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from autellix.launch import ServiceProcess, start_sim_engine

SimEngineFactory = Callable[..., ServiceProcess]


@pytest.fixture
def sim_engine_factory(tmp_path: Path) -> Iterator[SimEngineFactory]:
    """Start simulated engines with given flags; every one is stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(*args: str, name: str = "sim-engine") -> ServiceProcess:
        service = start_sim_engine(tmp_path, list(args), name=name)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def metric_value(text: str, name: str, labels: Sequence[str] = ()) -> float:
    """The value of the first sample called ``name`` (whose label text holds every item of ``labels``)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric == name and all(label in head for label in labels):
            return float(value)
    raise KeyError(name)
