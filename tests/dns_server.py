"""A tiny authoritative DNS server on loopback (UDP, a thread of its own) whose answers a test changes:
the DNS path of ``--backend-dns`` is tested against a real server, not a patched resolver. dnspython
parses the queries and builds the replies (``dns.message.make_response``)."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Self

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 1


class DnsServer:
    """``answer(name, addresses)``, ``fail(name)`` (SERVFAIL), ``forget(name)`` (NXDOMAIN)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._records: dict[str, list[str] | None] = {}  # None: SERVFAIL
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.queries = 0

    def answer(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._records[name.rstrip(".").lower()] = list(addresses)

    def fail(self, name: str) -> None:
        with self._lock:
            self._records[name.rstrip(".").lower()] = None

    def forget(self, name: str) -> None:
        with self._lock:
            self._records.pop(name.rstrip(".").lower(), None)

    def _reply(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        with self._lock:
            self.queries += 1
            known = name in self._records
            addresses = self._records.get(name)
        if not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif addresses is None:
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            version = (
                4 if question.rdtype == dns.rdatatype.A else 6 if question.rdtype == dns.rdatatype.AAAA else 0
            )
            matching = [a for a in addresses if ipaddress.ip_address(a).version == version]
            if matching:
                kind = dns.rdatatype.to_text(question.rdtype)
                response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", kind, matching))
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._reply(data)
            if reply is not None:
                self._socket.sendto(reply, peer)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
