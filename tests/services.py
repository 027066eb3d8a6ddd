"""Starting autellix services for a test and stopping them all at its end (the factories' one engine).

``service_starter(log_dir, "sidecar")`` yields ``start(*flags, name=..., config=..., timeout=...)``: each
call launches ``autellix sidecar`` on a free loopback port (autellix/launch.py ``service``), waits until
it is healthy and returns it; ``config`` is written to a YAML file and passed with ``--config`` (for
settings that have no flag). Every service started is stopped when the context ends, also on errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml

from autellix.launch import ServiceGroup, ServiceProcess, service

ServiceFactory = Callable[..., ServiceProcess]


@contextmanager
def service_starter(log_dir: Path, subcommand: str, timeout: float = 30.0) -> Iterator[ServiceFactory]:
    group = ServiceGroup()
    configs = itertools.count()
    default_timeout = timeout

    def start(
        *args: str,
        name: str | None = None,
        config: Mapping[str, object] | None = None,
        timeout: float = default_timeout,
    ) -> ServiceProcess:
        extra: list[str] = []
        if config is not None:
            path = log_dir / f"{name or subcommand}-config-{next(configs)}.yaml"
            path.write_text(yaml.safe_dump(dict(config)))
            extra = ["--config", str(path)]
        item = service(subcommand, log_dir, [*extra, *args], name)
        group.start_all([item], timeout)
        return item

    with group:
        yield start
