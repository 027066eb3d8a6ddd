"""``--backend-dns NAME:PORT``: re-resolve a headless Service and apply the changes (the IO shell).

What changes is decided by :func:`.discovery.plan`; this module asks DNS (dnspython's asyncio resolver,
A and AAAA at once) and applies the answer to the pool every ``interval`` seconds. The nameserver is
the system's (``/etc/resolv.conf``, its search list honoured, as ``getaddrinfo`` would) unless
``--dns-nameserver HOST[:PORT]`` names one. discovery.py rule 4: NXDOMAIN or no record is an empty
answer (every backend of the name goes); any other failure keeps the backends of the last answer and
is logged once until the name resolves again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from .backends import Backend, BackendPool
from .discovery import BackendChanges, answer_backends, dns_source, plan

log = logging.getLogger("autellix.proxy.dns")

RECORD_TYPES = ("A", "AAAA")


class ResolutionFailed(Exception):
    """discovery.py rule 4: no answer at all (the backends of the last answer stay)."""


def make_resolver(nameserver: str | None, timeout: float) -> dns.asyncresolver.Resolver:
    """The system's resolver, or one that asks ``HOST[:PORT]`` only."""
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
        resolver.use_search_by_default = True
    else:
        host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        if port:
            resolver.port = int(port)
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


async def resolve_addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """Every A and AAAA address of ``name`` (empty if it has none); :class:`ResolutionFailed` else."""

    async def one(kind: str) -> list[str]:
        try:
            answer = await resolver.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise ResolutionFailed(f"{kind} {name}: {type(exc).__name__}: {exc}") from None
        return [record.to_text() for record in answer]

    v4, v6 = await asyncio.gather(one("A"), one("AAAA"))
    return [*v4, *v6]


@dataclass(slots=True)
class DnsWatch:
    """One ``--backend-dns`` name kept in step with the pool."""

    pool: BackendPool
    resolver: dns.asyncresolver.Resolver
    name: str
    port: int
    on_added: Callable[[Backend], None]  # the shell checks a new backend at once (backends.py rule 6)
    failing: str | None = None

    @property
    def source(self) -> str:
        return dns_source(self.name, self.port)

    async def refresh(self) -> BackendChanges:
        """One resolution, applied; a failure changes nothing (discovery.py rule 4)."""
        try:
            addresses = await resolve_addresses(self.resolver, self.name)
        except ResolutionFailed as exc:
            if self.failing is None:
                log.warning("cannot resolve %s (keeping its %d backend(s)): %s", self.name,
                            len(self.pool.of_source(self.source)), exc)  # fmt: skip
            self.failing = str(exc)
            return BackendChanges()
        if self.failing is not None:
            log.info("%s resolves again", self.name)
            self.failing = None
        current = self.pool.of_source(self.source)
        taken = [engine for engine in self.pool.by_id if engine not in current]
        changes = plan(current, answer_backends(addresses, self.port), taken)
        for engine in changes.conflicts:
            log.warning("%s lists %s, which another source already holds: left alone", self.name, engine)
        for engine in changes.remove:
            self.pool.remove(engine)
        for engine, url in changes.add:
            self.on_added(self.pool.add(engine, url, self.source))
        return changes

    async def run(self, interval: float) -> None:
        """Resolve forever (the first resolution is the caller's, before serving)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # never stop watching
                log.exception("refreshing backends of %s failed", self.name)
