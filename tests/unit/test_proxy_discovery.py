"""Backends that come and go: the pure diff (discovery.py), the pool's add/remove (backends.py rule 6),
the admin endpoint in-process, and the DNS shell against a tiny DNS server on loopback (dns_watch.py).
The same under load, with real processes, is tests/integration/test_proxy_dns.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.proxy.app import PROXY
from autellix.proxy.config import ProxySettings
from autellix.proxy.discovery import (
    BackendChanges,
    address_id,
    answer_backends,
    parse_dns_target,
    plan,
)
from autellix.proxy.dns_watch import DnsWatch, make_resolver
from autellix.settings import SettingsError
from tests.dns_server import DnsServer
from tests.unit.proxy_harness import (
    ProxyStarter,
    RecordingBackend,
    proxy_starter,
    recording_backends,
)
from tests.unit.test_proxy_auth import bearer, proxy_settings

# ----- the diff ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "answer", "taken", "expected"),
    [
        ({}, {}, [], BackendChanges()),
        ({}, {"a": "u1"}, [], BackendChanges(add=(("a", "u1"),))),
        ({"a": "u1"}, {"a": "u1"}, [], BackendChanges()),
        ({"a": "u1", "b": "u2"}, {"b": "u2"}, [], BackendChanges(remove=("a",))),
        ({"a": "u1"}, {"a": "u9"}, [], BackendChanges(add=(("a", "u9"),), remove=("a",))),  # moved
        ({}, {"s": "u1", "c": "u2"}, ["s"], BackendChanges(add=(("c", "u2"),), conflicts=("s",))),
        ({"a": "u1", "b": "u2"}, {}, [], BackendChanges(remove=("a", "b"))),  # scaled to zero
    ],
)
def test_plan(
    current: dict[str, str], answer: dict[str, str], taken: list[str], expected: BackendChanges
) -> None:
    assert plan(current, answer, taken) == expected


ids = st.sampled_from(["a", "b", "c", "d", "e"])
urls = st.sampled_from(["u1", "u2"])


@given(st.dictionaries(ids, urls), st.dictionaries(ids, urls), st.sets(ids))
def test_applying_the_plan_gives_the_answer_minus_other_sources(
    current: dict[str, str], answer: dict[str, str], taken: set[str]
) -> None:
    taken -= set(current)  # another source's ids are never this source's
    changes = plan(current, answer, taken)
    after = {engine: url for engine, url in current.items() if engine not in changes.remove}
    assert not set(changes.add) & set(after.items())
    after.update(changes.add)
    assert after == {engine: url for engine, url in answer.items() if engine not in taken}
    assert set(changes.conflicts) == set(answer) & taken


def test_addresses_name_backends() -> None:
    assert address_id("10.0.0.7", 8000) == "10.0.0.7:8000"
    assert address_id("fd00:0::7", 8000) == "[fd00::7]:8000"
    assert answer_backends(["10.0.0.7", "fd00::7", "10.0.0.7"], 80) == {
        "10.0.0.7:80": "http://10.0.0.7:80",
        "[fd00::7]:80": "http://[fd00::7]:80",
    }


@pytest.mark.parametrize(
    "spec", ["engines", "engines:", ":80", "engines:0", "engines:70000", "a..b:80", "x:y"]
)
def test_bad_dns_targets(spec: str) -> None:
    with pytest.raises(ValueError, match="backend DNS name"):
        parse_dns_target(spec)


def test_dns_settings() -> None:
    settings = proxy_settings(["--backend-dns", "engines.ns.svc.cluster.local.:8000", "--dns-interval", "1"])
    assert settings.dns_targets() == [("engines.ns.svc.cluster.local", 8000)] and settings.dns_interval == 1
    with pytest.raises(SettingsError, match="NAME:PORT"):
        proxy_settings(["--backend-dns", "engines"])
    bare = build_without_backend(["--backend-dns", "engines:80"])
    assert bare.backend == [] and bare.backend_dns == ["engines:80"]
    with pytest.raises(SettingsError, match="no backend"):
        build_without_backend([])


def build_without_backend(argv: list[str]) -> ProxySettings:
    from autellix.cli import build_parser
    from autellix.settings import load_settings

    return load_settings(ProxySettings, build_parser("proxy").parse_args(["proxy", *argv]))


# ----- the DNS shell against a real DNS server on loopback -------------------------------------------


async def test_the_watch_follows_the_answer_and_keeps_it_when_dns_fails() -> None:
    from autellix.proxy.backends import BackendPool
    from autellix.proxy.transport import MockReply, MockTransport, UpstreamRequest

    async def never(request: UpstreamRequest) -> MockReply:
        raise AssertionError("the watch itself sends no request")

    added: list[str] = []
    pool = BackendPool([("static", "http://127.0.0.1:1")], MockTransport(never))
    with DnsServer() as dns:
        dns.answer("engines.test", ["127.0.0.2", "::2"])
        watch = DnsWatch(
            pool, make_resolver(dns.address, 0.5), "engines.test", 9000, lambda b: added.append(b.engine_id)
        )
        changes = await watch.refresh()
        assert [engine for engine, _ in changes.add] == ["127.0.0.2:9000", "[::2]:9000"] == added
        assert (
            pool.by_id["[::2]:9000"].url == "http://[::2]:9000"
            and pool.by_id["[::2]:9000"].source == "dns:engines.test:9000"
        )
        dns.answer("engines.test", ["127.0.0.3"])
        changes = await watch.refresh()
        assert changes.remove == ("127.0.0.2:9000", "[::2]:9000") and changes.add == (
            ("127.0.0.3:9000", "http://127.0.0.3:9000"),
        )
        dns.fail("engines.test")  # SERVFAIL: keep what there is (discovery.py rule 4)
        assert not await watch.refresh() and watch.failing is not None
        assert sorted(pool.by_id) == ["127.0.0.3:9000", "static"]
        dns.answer("engines.test", [])  # the name exists with no address: everything goes
        assert (await watch.refresh()).remove == ("127.0.0.3:9000",)
        dns.forget("engines.test")  # NXDOMAIN: the same
        assert not await watch.refresh() and watch.failing is None
    assert sorted(pool.by_id) == ["static"]
    async with asyncio_timeout(5):
        unreachable = DnsWatch(pool, make_resolver("127.0.0.1:9", 0.2), "engines.test", 9000, lambda b: None)
        assert not await unreachable.refresh() and unreachable.failing is not None


def asyncio_timeout(seconds: float) -> Any:
    import asyncio

    return asyncio.timeout(seconds)


# ----- the admin endpoint in-process ----------------------------------------------------------------


@pytest.fixture
async def backends() -> AsyncIterator[list[RecordingBackend]]:
    async with recording_backends(2) as started:
        yield started


@pytest.fixture
async def start_proxy(backends: list[RecordingBackend]) -> AsyncIterator[ProxyStarter]:
    def settings_of(argv: list[str]) -> ProxySettings:
        return build_without_backend(
            ["--backend", f"e1={backends[0].url()}", "--health-check-interval", "60", *argv]
        )

    async with proxy_starter(settings_of) as start:
        yield start


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_admin_adds_lists_and_removes_backends(start_proxy, backends: list[RecordingBackend]) -> None:
    proxy = await start_proxy("--api-key", "k")
    key = bearer("k")
    assert (await proxy.get("/admin/backends")).status == 401
    added = await proxy.post(
        "/admin/backends", json={"name": "e2", "url": backends[1].url() + "/"}, headers=key
    )
    body = await added.json()
    assert added.status == 201 and body["healthy"] and body["source"] == "admin" and body["models"] == ["m"]
    assert body["url"] == backends[1].url()
    listed = await (await proxy.get("/admin/backends", headers=key)).json()
    assert [(b["name"], b["source"]) for b in listed["data"]] == [("e1", "static"), ("e2", "admin")]
    for payload, status, code in [
        ({"name": "e2", "url": backends[1].url()}, 409, "backend_exists"),
        ({"name": "e3", "url": "ftp://x"}, 400, "invalid_backend"),
        ({"name": "", "url": "http://x:1"}, 400, "invalid_type"),
        ({"name": "a=b", "url": "http://x:1"}, 400, "invalid_name"),
        ({"name": "e3", "url": "http://x:1", "weight": 2}, 400, "invalid_field"),
        ([], 400, "invalid_json"),
    ]:
        reply = await proxy.post("/admin/backends", json=payload, headers=key)
        assert reply.status == status and (await reply.json())["error"]["code"] == code, payload
    removed = await proxy.delete("/admin/backends/e1", headers=key)
    assert removed.status == 200 and (await removed.json())["deleted"]
    assert (await proxy.delete("/admin/backends/e1", headers=key)).status == 404
    for _ in range(3):
        assert (await proxy.post("/v1/chat/completions", json=CHAT, headers=key)).status == 200
    assert len(backends[1].calls()) == 3 and backends[0].calls() == []
    metrics = await (await proxy.get("/metrics")).text()
    assert 'autellix_proxy_backend_healthy{engine="e2"} 1.0' in metrics
    assert 'autellix_proxy_backend_healthy{engine="e1"}' not in metrics
    assert [b.engine_id for b in proxy.server.app[PROXY].pool.backends] == ["e2"]


class Peer:
    """The transport of a request from ``host`` (what ``request.remote`` reads)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default


@pytest.mark.parametrize(("host", "allowed"), [("127.0.0.1", True), ("::1", True), ("10.0.0.9", False)])
async def test_without_keys_admin_is_for_loopback_callers(start_proxy, host: str, allowed: bool) -> None:
    from aiohttp.test_utils import make_mocked_request

    from autellix.api_errors import ApiError

    proxy = await start_proxy()
    assert (await proxy.get("/admin/backends")).status == 200  # the test client is on loopback
    admin = proxy.server.app[PROXY].admin
    request = make_mocked_request("GET", "/admin/backends", transport=Peer(host))
    if allowed:
        assert (await admin.list(request)).status == 200
    else:
        with pytest.raises(ApiError) as info:
            await admin.list(request)
        assert info.value.status == 403 and info.value.code == "admin_forbidden"
    keyed = await start_proxy("--api-key", "k")
    assert keyed.server.app[PROXY].admin.keys_enabled
