"""Tenants and signed program ids (autellix/proxy/tenants.py): the rules as plain functions, then the
proxy app in-process with two keys against a backend that records what it was sent (the outermost
edge). Real processes, Redis and the sidecar are in tests/integration/test_proxy_tenants.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from autellix.auth import ApiKeys, key_id
from autellix.engine_adapters.protocol import MAX_ID_LENGTH, PROGRAM_ID
from autellix.proxy.app import PROXY
from autellix.proxy.config import ProxySettings
from autellix.proxy.tenants import (
    OPEN_TENANT,
    TAG_LENGTH,
    ProgramIds,
    ProgramIdSigner,
    Tenant,
    UnsignedProgramId,
)
from autellix.settings import SettingsError
from tests.unit.proxy_harness import (
    ProxyClient,
    ProxyStarter,
    RecordingBackend,
    proxy_starter,
    recording_backends,
)
from tests.unit.test_proxy_auth import CHAT, bearer, proxy_settings

A, B = Tenant("aaaaaaaaaaaaaaaa"), Tenant("bbbbbbbbbbbbbbbb")
SIGNER = ProgramIdSigner(b"s" * 32)

# ----- the rules -----------------------------------------------------------------------------------------


def test_the_open_proxy_is_one_tenant_and_keeps_ids_as_they_are() -> None:
    assert OPEN_TENANT.table_id("p") == "p"
    assert OPEN_TENANT.owns("p") and OPEN_TENANT.owns("aaaaaaaaaaaaaaaa/p")
    assert OPEN_TENANT.client_id("x/p") == "x/p"
    assert ProgramIds().table_id(OPEN_TENANT, "p") == "p"


@pytest.mark.parametrize("client_id", ["p", "bbbbbbbbbbbbbbbb/p", "/p", "aaaaaaaaaaaaaaaa"])
def test_no_id_a_tenant_sends_names_another_tenants_program(client_id: str) -> None:
    table = A.table_id(client_id)
    assert A.owns(table) and not B.owns(table)
    assert A.client_id(table) == client_id
    assert table != B.table_id(client_id)
    assert not B.owns(A.table_id(client_id.removeprefix(B.key_id + "/")))


def test_key_ids_are_stable_distinct_and_not_the_key() -> None:
    keys = ApiKeys.of(["k1", "k2"])
    first, second = keys.check(["Bearer k1"]), keys.check(["Bearer k2"])
    assert first.key_id == key_id("k1") and second.key_id == key_id("k2")
    assert first.key_id != second.key_id and len(key_id("k1")) == 16 and "k1" not in key_id("k1")
    assert keys.check(["Bearer nope"]).key_id is None and keys.check([]).key_id is None


def test_a_signed_id_verifies_for_its_tenant_only() -> None:
    signed = SIGNER.sign(A, "prog-1")
    assert signed.startswith("prog-1.") and len(signed) == len("prog-1.") + TAG_LENGTH
    assert SIGNER.verify(A, signed)
    assert not SIGNER.verify(B, signed)  # the tenant is inside the MAC
    assert not ProgramIdSigner(b"t" * 32).verify(A, signed)  # another secret


@pytest.mark.parametrize(
    "forged",
    [
        "prog-1",
        "prog-1.",
        ".0123456789abcdef0123456789abcdef",
        "prog-1." + "0" * TAG_LENGTH,
        "prog-2" + SIGNER.sign(A, "prog-1")[6:],
        SIGNER.sign(A, "prog-1").upper(),
        SIGNER.sign(A, "prog-1")[:-1],
    ],
)
def test_unsigned_and_forged_ids_fail(forged: str) -> None:
    assert not SIGNER.verify(A, forged)
    with pytest.raises(UnsignedProgramId, match="not signed"):
        ProgramIds(SIGNER, require_signed=True).table_id(A, forged)


def test_ids_are_opaque_unless_signing_is_required() -> None:
    ids = ProgramIds(SIGNER)
    signed = ids.issue(A, "p")
    assert ids.table_id(A, "p") == A.table_id("p") != ids.table_id(A, signed) == A.table_id(signed)
    assert ProgramIds(SIGNER, require_signed=True).table_id(A, signed) == A.table_id(signed)
    assert ProgramIds().issue(A, "p") == "p" and ids.max_requested_length == MAX_ID_LENGTH - TAG_LENGTH - 1
    with pytest.raises(ValueError, match="no signer"):
        ProgramIds(None, require_signed=True)


def test_signing_settings(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 20 + "\n")
    assert proxy_settings(["--program-id-secret-file", str(secret)]).program_id_secret_file == str(secret)
    short = tmp_path / "short"
    short.write_text("abc")
    for argv, fragment in [
        (["--program-id-secret", "short"], "at least 16"),
        (["--program-id-secret-file", str(short)], "at least 16 bytes"),
        (["--program-id-secret-file", str(tmp_path / "none")], "cannot read"),
        (["--program-id-secret", "y" * 16, "--program-id-secret-file", str(secret)], "not both"),
    ]:
        with pytest.raises(SettingsError, match=fragment):
            proxy_settings(argv)
    assert "y" * 16 not in repr(proxy_settings(["--program-id-secret", "y" * 16]))


# ----- the proxy app in-process, two keys -----------------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    async with recording_backends(1) as started:
        yield started[0]


@pytest.fixture
async def start_proxy(backend: RecordingBackend) -> AsyncIterator[ProxyStarter]:
    def settings_of(argv: list[str]) -> ProxySettings:
        return proxy_settings(["--backend", f"e1={backend.url()}", "--health-check-interval", "60", *argv])

    async with proxy_starter(settings_of) as start:
        yield start


async def chat(proxy: ProxyClient, key: str, program: str) -> int:
    reply = await proxy.post(
        "/v1/chat/completions", json=CHAT, headers={**bearer(key), "X-Program-Id": program}
    )
    await reply.read()
    return reply.status


async def test_another_key_cannot_see_end_or_join_a_program(start_proxy, backend: RecordingBackend) -> None:
    proxy = await start_proxy("--api-key", "key-a", "--api-key", "key-b")
    created = await proxy.post("/v1/programs", json={"id": "shared"}, headers=bearer("key-a"))
    assert (await created.json())["id"] == "shared"
    assert await chat(proxy, "key-a", "shared") == 200
    for method in ("GET", "DELETE"):
        reply = await proxy.request(method, "/v1/programs/shared", headers=bearer("key-b"))
        assert reply.status == 404 and (await reply.json())["error"]["code"] == "program_not_found"
    forged = f"{key_id('key-a')}/shared"  # naming the table id does not reach it
    assert await chat(proxy, "key-b", "shared") == 200
    assert await chat(proxy, "key-b", forged) == 200
    own = await (await proxy.get("/v1/programs/shared", headers=bearer("key-a"))).json()
    assert own["id"] == "shared" and own["calls_completed"] == 1  # B's calls added nothing to it
    theirs = await (await proxy.get("/v1/programs/shared", headers=bearer("key-b"))).json()
    assert theirs["id"] == "shared" and theirs["calls_completed"] == 1 and theirs["service_plas"] > 0
    sent = [headers[PROGRAM_ID] for headers in backend.calls()]
    assert sent == [f"{key_id('key-a')}/shared", f"{key_id('key-b')}/shared", f"{key_id('key-b')}/{forged}"]
    table = proxy.server.app[PROXY].store
    assert await table.get("shared") is None  # no record without a namespace
    deleted = await proxy.delete("/v1/programs/shared", headers=bearer("key-a"))
    assert deleted.status == 200 and (await deleted.json())["id"] == "shared"
    assert (await proxy.get("/v1/programs/shared", headers=bearer("key-b"))).status == 200


async def test_without_keys_ids_are_used_as_sent(start_proxy, backend: RecordingBackend) -> None:
    proxy = await start_proxy()
    assert (await proxy.post("/v1/programs", json={"id": "p"})).status == 201
    reply = await proxy.post("/v1/chat/completions", json=CHAT, headers={"X-Program-Id": "p"})
    assert reply.status == 200
    assert backend.calls()[-1][PROGRAM_ID] == "p"
    assert (await proxy.server.app[PROXY].store.get("p")) is not None


async def test_signed_ids_are_required_when_asked(start_proxy, backend: RecordingBackend) -> None:
    proxy = await start_proxy(
        "--api-key", "key-a", "--api-key", "key-b", "--require-signed-ids", "--program-id-secret", "z" * 32
    )
    signed = (await (await proxy.post("/v1/programs", headers=bearer("key-a"))).json())["id"]
    assert signed.startswith("prog-") and len(signed.rpartition(".")[2]) == TAG_LENGTH
    assert await chat(proxy, "key-a", signed) == 200
    for key, program in [("key-a", signed.rpartition(".")[0]), ("key-b", signed), ("key-a", signed + "0")]:
        reply = await proxy.post(
            "/v1/chat/completions", json=CHAT, headers={**bearer(key), "X-Program-Id": program}
        )
        body = await reply.json()
        assert reply.status == 403, (key, program)
        assert body["error"]["code"] == "unsigned_program_id"
        assert body["error"]["param"] == "X-Program-Id"
    assert (await proxy.get(f"/v1/programs/{signed}", headers=bearer("key-b"))).status == 403
    messages = await proxy.post(
        "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={**bearer("key-a"), "X-Program-Id": "unsigned"},
    )
    shaped = await messages.json()
    assert messages.status == 403 and shaped["type"] == "error"  # Anthropic's shape
    assert shaped["error"]["type"] == "permission_error"
    assert len(backend.calls()) == 1
    named = await proxy.post("/v1/programs", json={"id": "mine"}, headers=bearer("key-a"))
    assert (await named.json())["id"] == ProgramIdSigner(b"z" * 32).sign(Tenant(key_id("key-a")), "mine")
    anonymous = await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer("key-b"))
    assert anonymous.status == 200  # a call without an id still runs (a program of its own)
