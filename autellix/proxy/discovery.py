"""Backends that come and go: what one DNS answer changes in the pool (issue 13 part 2).

Theory of operation
-------------------
Plain data in, plain data out; dns_watch.py is the IO shell that resolves names on an interval and
applies the changes to the pool (backends.py), and app.py serves the admin endpoint.

1. Source. Every backend has one source: ``static`` (``--backend``), ``dns:NAME:PORT`` (one
   ``--backend-dns``) or ``admin`` (``POST /admin/backends``). A DNS source adds and removes only its
   own backends; the others are never touched by a resolution.
2. Naming. A headless Service's answer is one A or AAAA record per ready pod: each address becomes one
   backend whose id is the address and port (``10.0.0.7:8000``, ``[fd00::7]:8000``) and whose URL is
   ``http://`` that (:func:`answer_backends`). The same id means the same backend on every replica,
   so pins and the fleet's loads in the shared table agree. (A pod that restarts with a new address is
   a new backend; its programs' pins are kept and their long calls go to the least-used engine,
   autellix_locality.py, until the pinned address returns, if ever.)
3. Changes. :func:`plan` compares the source's backends with the answer: an id missing from the
   answer is removed, a new one added, an id whose URL changed is removed and added again. An id that
   another source already holds is left alone and reported (``conflicts``), never taken over.
4. Failure is not absence. A resolution that *fails* (timeout, SERVFAIL, no nameserver) changes
   nothing: the backends of the last answer stay, and their health checks decide. A name that
   *exists with no address* (NXDOMAIN or an empty answer: a Service scaled to zero) removes them all;
   the shell tells the two apart.
5. Removal is not interruption. A removed backend takes no new call; calls in flight on it hold their
   backend and finish (backends.py rule 6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

STATIC = "static"
ADMIN = "admin"


def dns_source(name: str, port: int) -> str:
    """Rule 1: the source name of one ``--backend-dns``."""
    return f"dns:{name}:{port}"


def parse_dns_target(spec: str) -> tuple[str, int]:
    """``NAME:PORT`` → ``(name, port)``; ValueError with one line otherwise."""
    name, sep, port_text = spec.strip().rpartition(":")
    name = name.strip().rstrip(".")
    if not sep or not name or not port_text.isdigit():
        raise ValueError(f"backend DNS name {spec!r}: expected NAME:PORT (a headless Service and its port)")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"backend DNS name {spec!r}: the port must be 1-65535")
    if len(name) > 253 or not all(part and len(part) <= 63 for part in name.split(".")):
        raise ValueError(f"backend DNS name {spec!r}: not a valid DNS name")
    return name, port


def address_id(address: str, port: int) -> str:
    """Rule 2: the id (and URL authority) of one address."""
    ip = ipaddress.ip_address(address)
    host = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return f"{host}:{port}"


def answer_backends(addresses: Iterable[str], port: int, scheme: str = "http") -> dict[str, str]:
    """Rule 2: id → URL for every address of one answer (duplicates collapse, order is kept)."""
    backends: dict[str, str] = {}
    for address in addresses:
        engine_id = address_id(address, port)
        backends[engine_id] = f"{scheme}://{engine_id}"
    return backends


@dataclass(frozen=True, slots=True)
class BackendChanges:
    """Rule 3: what one answer changes, in a deterministic order."""

    add: tuple[tuple[str, str], ...] = ()  # (id, url)
    remove: tuple[str, ...] = ()  # ids
    conflicts: tuple[str, ...] = ()  # ids the answer names that another source holds

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def plan(current: Mapping[str, str], answer: Mapping[str, str], taken: Iterable[str] = ()) -> BackendChanges:
    """Rule 3: ``current`` (this source's id → URL) against ``answer``; ``taken``: other sources' ids."""
    others = set(taken)
    moved = sorted(engine for engine, url in current.items() if engine in answer and answer[engine] != url)
    remove = sorted(engine for engine in current if engine not in answer) + moved
    add = [(engine, url) for engine, url in sorted(answer.items()) if engine not in others]
    add = [(engine, url) for engine, url in add if engine not in current or engine in moved]
    conflicts = sorted(engine for engine in answer if engine in others)
    return BackendChanges(tuple(add), tuple(sorted(remove)), tuple(conflicts))
