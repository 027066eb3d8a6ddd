"""API keys (autellix/auth.py): parsing from every source, rotation, the constant-time check, the
exempt routes, the 401's shape, and which credential reaches a backend or an engine.

The decisions are tested as plain functions; the proxy app in-process against a backend that records
every request's headers (the outermost edge); the sidecar's engine client against a recording engine.
Real processes and the ``openai`` SDK are in tests/integration/test_proxy_auth.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from autellix import auth
from autellix.auth import (
    ApiKeys,
    KeyRing,
    Reload,
    check_key,
    parse_key_file,
    parse_key_list,
    requires_key,
)
from autellix.cli import build_parser
from autellix.engine_adapters.config import SidecarSettings
from autellix.engine_adapters.sidecar import create_app as create_sidecar_app
from autellix.engine_adapters.upstream import EngineClient
from autellix.proxy.app import GUARD, PROXY, reload_key_file
from autellix.proxy.config import ProxySettings
from autellix.settings import SettingsError, load_settings
from tests.unit.proxy_harness import (
    ProxyStarter,
    RecordingBackend,
    proxy_starter,
    recording_backends,
)

# ----- builders ----------------------------------------------------------------------------------------


def proxy_settings(argv: list[str]) -> ProxySettings:
    args = build_parser("proxy").parse_args(["proxy", "--backend", "http://a:1", *argv])
    return load_settings(ProxySettings, args)


def sidecar_settings(argv: list[str]) -> SidecarSettings:
    args = build_parser("sidecar").parse_args(["sidecar", *argv])
    return load_settings(SidecarSettings, args)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTELLIX_API_KEY", "AUTELLIX_API_KEY_FILE", "AUTELLIX_BACKEND_API_KEY", "AUTELLIX_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AUTELLIX_ENGINE_API_KEY", raising=False)


def key_file(tmp_path: Path, text: str, name: str = "keys") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ----- keys: validation and parsing --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-abc", "a", "A.b_c~d+e/f=", "x" * 4096, "!#$%&'()*+-./:;<=>?@[]^_`{|}~"])
def test_usable_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "has space", "tab\tkey", "a,b", "caf\u00e9", "x" * 4097, "nl\n"])
def test_unusable_keys_are_refused_without_repeating_them(key: str) -> None:
    with pytest.raises(ValueError) as info:
        check_key(key)
    assert not key or key not in str(info.value)


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        (None, []),
        ("", []),
        ("  ", []),
        ("k1", ["k1"]),
        ("k1,k2", ["k1", "k2"]),
        (" k1 , k2 ,", ["k1", "k2"]),
        ('["k1", "k2"]', ["k1", "k2"]),
        (["k1", "k2,k3"], ["k1", "k2", "k3"]),
        ([], []),
    ],
)
def test_key_lists_from_flags_env_and_yaml(value: Any, keys: list[str]) -> None:
    assert parse_key_list(value) == keys


@pytest.mark.parametrize("value", ["[not json", '["k1", 2]', 7, {"k": "v"}, "good,bad key"])
def test_bad_key_lists(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_key_list(value)


def test_key_file_skips_comments_blank_lines_and_trailing_whitespace() -> None:
    text = "# current\r\nk-new  \n\n   \n# old, remove after the rollout\nk-old\n"
    assert parse_key_file(text, "f") == ("k-new", "k-old")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "holds no API key"), ("# only a comment\n\n", "holds no API key"), ("ok\nbad key\n", "line 2")],
)
def test_unusable_key_files_fail_closed(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_key_file(text, "f")
    assert "bad key" not in str(info.value)


# ----- keys: the check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "authorization", "verdict"),
    [
        ((), [], "open"),
        ((), ["Bearer anything"], "open"),
        (("k1",), [], "missing"),
        (("k1",), ["Bearer k1"], "accepted"),
        (("k1",), ["bearer k1"], "accepted"),  # the scheme is case-insensitive
        (("k1",), ["  BEARER   k1  "], "accepted"),
        (("k1",), ["Bearer k2"], "invalid"),
        (("k1",), ["Bearer K1"], "invalid"),  # the key is not
        (("k1",), ["Bearer k1x"], "invalid"),
        (("k1",), ["Bearer caf\u00e9"], "invalid"),
        (("k1",), ["k1"], "malformed"),
        (("k1",), ["Basic azE6"], "malformed"),
        (("k1",), ["Bearer"], "malformed"),
        (("k1",), ["Bearer    "], "malformed"),
        (("k1",), ["Bearer k1", "Bearer k1"], "malformed"),
        (("old", "new"), ["Bearer old"], "accepted"),  # rotation: any listed key is accepted
        (("old", "new"), ["Bearer new"], "accepted"),
    ],
)
def test_check(keys: tuple[str, ...], authorization: list[str], verdict: str) -> None:
    result = ApiKeys.of(keys).check(authorization)
    assert result.verdict == verdict
    assert result.allowed == (verdict in ("open", "accepted"))


def test_every_key_is_compared_in_constant_time_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module auth.py calls
    keys = ApiKeys.of(["first", "second", "a-much-longer-third-key"])
    for presented, expected in [("first", True), ("a-much-longer-third-key", True), ("x", False)]:
        calls.clear()
        assert keys.matches(presented) is expected
        assert len(calls) == 3  # no early exit on the first match
        assert {len(a) for a, _ in calls} | {len(b) for _, b in calls} == {32}  # digests: length hidden


def test_the_key_set_keeps_and_shows_no_key() -> None:
    keys = ApiKeys.of(["sk-secret-1", "sk-secret-1", "sk-secret-2"])
    assert len(keys) == 2
    assert "sk-secret" not in repr(keys) and b"sk-secret" not in b"".join(keys.digests)


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/health", False),
        ("HEAD", "/health", False),
        ("GET", "/ready", False),
        ("GET", "/metrics", False),
        ("POST", "/health", True),
        ("GET", "/health/", True),
        ("GET", "/v1/models", True),
        ("POST", "/v1/chat/completions", True),
        ("POST", "/v1/programs", True),
        ("DELETE", "/v1/programs/p", True),
        ("GET", "/no/such/route", True),
    ],
)
def test_exempt_routes(method: str, path: str, needed: bool) -> None:
    assert requires_key(method, path) is needed


@pytest.mark.parametrize(
    ("checks", "backend_key", "forwarded"),
    [(False, None, True), (True, None, False), (False, "b", False), (True, "b", False)],
)
def test_which_credential_goes_upstream(checks: bool, backend_key: str | None, forwarded: bool) -> None:
    assert auth.forwards_client_authorization(checks, backend_key) is forwarded


@pytest.mark.parametrize(
    ("verdict", "challenge"),
    [
        ("missing", 'Bearer realm="autellix"'),
        ("invalid", 'Bearer realm="autellix", error="invalid_token"'),
        ("malformed", 'Bearer realm="autellix", error="invalid_token"'),
    ],
)
def test_challenges_follow_rfc_6750(verdict: auth.Verdict, challenge: str) -> None:
    result = auth.AuthResult(verdict)
    assert result.challenge == challenge and result.message


# ----- settings: flags > env > YAML, files ---------------------------------------------------------------


def test_keys_from_repeated_flags_env_yaml_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_settings([]).api_keys() == ()
    assert proxy_settings(["--api-key", "k1", "--api-key", "k2"]).api_keys() == ("k1", "k2")
    monkeypatch.setenv("AUTELLIX_API_KEY", "e1,e2")
    assert proxy_settings([]).api_keys() == ("e1", "e2")
    assert proxy_settings(["--api-key", "f1"]).api_keys() == ("f1",)  # the flag wins over the env
    monkeypatch.setenv("AUTELLIX_API_KEY", '["j1", "j2"]')
    assert proxy_settings([]).api_keys() == ("j1", "j2")
    monkeypatch.setenv("AUTELLIX_API_KEY", "")  # an empty optional Secret: open
    assert proxy_settings([]).api_keys() == ()
    monkeypatch.delenv("AUTELLIX_API_KEY")
    config = tmp_path / "proxy.yaml"
    config.write_text("api_key: y1,y2\nbackend_api_key: to-backend\n")
    settings = proxy_settings(["--config", str(config)])
    assert settings.api_keys() == ("y1", "y2") and settings.backend_api_key == "to-backend"
    path = key_file(tmp_path, "from-file\n")
    assert proxy_settings(["--api-key", "k1", "--api-key-file", path]).api_keys() == ("k1", "from-file")


def test_settings_never_show_a_key(tmp_path: Path) -> None:
    settings = proxy_settings(["--api-key", "sk-shown-nowhere", "--backend-api-key", "sk-backend-too"])
    assert "sk-shown-nowhere" not in repr(settings) and "sk-backend-too" not in repr(settings)
    sidecar = sidecar_settings(["--api-key", "sk-side", "--engine-api-key", "sk-engine"])
    assert "sk-side" not in repr(sidecar) and "sk-engine" not in repr(sidecar)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--api-key", "has space"], "api_key"),
        (["--api-key-file", "/no/such/file"], "api_key_file"),
        (["--backend-api-key", "bad key"], "backend_api_key"),
    ],
)
def test_bad_key_settings_are_one_line_naming_the_setting(argv: list[str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment) as info:
        proxy_settings(argv)
    assert "\n" not in str(info.value) and "has space" not in str(info.value)


def test_an_empty_key_file_stops_the_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="holds no API key"):
        proxy_settings(["--api-key-file", key_file(tmp_path, "\n# nothing yet\n")])


def test_sidecar_keys_and_engine_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTELLIX_ENGINE_API_KEY", "to-engine")
    monkeypatch.setenv("AUTELLIX_API_KEY", "s1,s2")
    settings = sidecar_settings(["--api-key-file", key_file(tmp_path, "s3\n")])
    assert settings.api_keys() == ("s1", "s2", "s3") and settings.engine_api_key == "to-engine"
    monkeypatch.setenv("AUTELLIX_ENGINE_API_KEY", "")
    assert sidecar_settings([]).engine_api_key is None


# ----- the proxy app in-process ------------------------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    async with recording_backends(1) as started:
        yield started[0]


@pytest.fixture
async def start_proxy(backend: RecordingBackend) -> AsyncIterator[ProxyStarter]:
    def settings_of(argv: list[str]) -> ProxySettings:
        return proxy_settings(["--backend", f"e1={backend.url()}", "--health-check-interval", "60", *argv])

    async with proxy_starter(settings_of, handler_cancellation=True) as start:
        yield start


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="autellix"'),
        (bearer("wrong"), 'Bearer realm="autellix", error="invalid_token"'),
        ({"x-api-key": "k1"}, 'Bearer realm="autellix"'),  # Anthropic's header is not a credential here
    ],
)
async def test_a_rejected_call_is_an_openai_401_that_touches_nothing(
    start_proxy, backend: RecordingBackend, headers: dict[str, str], challenge: str
) -> None:
    proxy = await start_proxy("--api-key", "k1")
    reply = await proxy.post("/v1/chat/completions", json=CHAT, headers={"X-Program-Id": "p", **headers})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == challenge
    body = await reply.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_api_key"
    assert body["error"]["param"] is None and "wrong" not in body["error"]["message"]
    assert backend.calls() == []
    store = proxy.server.app[PROXY].store
    assert await store.program_count() == 0 and await store.get("p") is None
    metrics = await (await proxy.get("/metrics")).text()
    assert 'route="/v1/chat/completions",status="401"} 1.0' in metrics


async def test_probes_and_metrics_stay_open_everything_else_needs_the_key(start_proxy) -> None:
    proxy = await start_proxy("--api-key", "k1")
    for path in ("/health", "/ready", "/metrics"):
        assert (await proxy.get(path)).status == 200, path
    assert (await proxy.head("/health")).status == 200
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/programs"),
        ("GET", "/v1/programs/p"),
        ("DELETE", "/v1/programs/p"),
        ("GET", "/no/such/route"),  # no route map for anonymous callers
        ("POST", "/health"),
    ]:
        assert (await proxy.request(method, path)).status == 401, (method, path)
    assert (await proxy.get("/v1/models", headers=bearer("k1"))).status == 200
    assert (await proxy.get("/no/such/route", headers=bearer("k1"))).status == 404
    created = await proxy.post("/v1/programs", json={"id": "p"}, headers=bearer("k1"))
    assert created.status == 201


async def test_both_keys_work_during_a_rotation(start_proxy, backend: RecordingBackend) -> None:
    proxy = await start_proxy("--api-key", "old", "--api-key", "new")
    for key in ("old", "new"):
        assert (await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status == 200
    assert len(backend.calls()) == 2


@pytest.mark.parametrize(
    ("argv", "client_key", "upstream"),
    [
        ([], "client-key", "Bearer client-key"),  # open, no backend key: passes through as before
        ([], None, None),
        (["--api-key", "k1"], "k1", None),  # the proxy's credential stays with the proxy
        (["--api-key", "k1", "--backend-api-key", "to-backend"], "k1", "Bearer to-backend"),
        (["--backend-api-key", "to-backend"], "client-key", "Bearer to-backend"),
    ],
)
async def test_the_upstream_credential(
    start_proxy, backend: RecordingBackend, argv: list[str], client_key: str | None, upstream: str | None
) -> None:
    proxy = await start_proxy(*argv)
    headers = bearer(client_key) if client_key is not None else {}
    for stream in (False, True):
        reply = await proxy.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=headers)
        assert reply.status == 200
    for sent in backend.calls():
        assert [v for k, v in sent.items() if k.lower() == "authorization"] == (
            [upstream] if upstream else []
        )
        assert sent["X-Autellix-Call-Id"] and sent["Accept-Encoding"] == "identity"  # the rest as before


async def test_the_backend_key_rides_on_health_checks_and_model_lists(
    start_proxy, backend: RecordingBackend
) -> None:
    await start_proxy("--backend-api-key", "to-backend")
    checks = [headers for path, headers in backend.seen if path != "/v1/chat/completions"]
    assert {path for path, _ in backend.seen} >= {"/ready", "/v1/models"}
    assert checks and all(headers["Authorization"] == "Bearer to-backend" for headers in checks)


async def test_a_header_that_is_not_utf8_is_a_400_not_a_crash(start_proxy) -> None:
    proxy = await start_proxy("--api-key", "k1")
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\nX-Odd: caf\xe9\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    head = await reader.read(64)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")


async def test_the_key_file_is_reloaded_and_a_broken_one_keeps_the_keys(
    start_proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path, "first\n")
    proxy = await start_proxy("--api-key", "fixed", "--api-key-file", path)
    guard, settings = proxy.server.app[GUARD], proxy.server.app[PROXY].settings

    async def status(key: str) -> int:
        reply = await proxy.get("/v1/models", headers=bearer(key))
        code: int = reply.status
        return code

    assert (await status("first"), await status("fixed"), await status("second")) == (200, 200, 401)
    Path(path).write_text("second\n")
    await reload_key_file(guard, settings)
    assert (await status("first"), await status("fixed"), await status("second")) == (401, 200, 200)
    caplog.set_level(logging.WARNING, "autellix.proxy")
    Path(path).write_text("")  # emptied by mistake: fail closed, keep the keys in force
    await reload_key_file(guard, settings)
    await reload_key_file(guard, settings)
    Path(path).unlink()
    await reload_key_file(guard, settings)
    assert (await status("second"), await status("fixed")) == (200, 200)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "holds no API key" in warnings[0] and "cannot read" in warnings[1]
    assert not any("second" in message.replace(path, "") for message in warnings)


async def test_start_up_says_whether_the_proxy_is_open(start_proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "autellix.proxy")
    await start_proxy()
    await start_proxy("--api-key", "sk-do-not-log-me")
    messages = [r.getMessage() for r in caplog.records if r.name == "autellix.proxy"]
    assert sum("the proxy is open" in m for m in messages) == 1
    assert sum("API keys: 1 accepted" in m for m in messages) == 1
    assert not any("sk-do-not-log-me" in m for m in messages)


# ----- the sidecar's engine client -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "given", "sent"),
    [
        (
            None,
            {"authorization": "Bearer caller", "X-A": "1"},
            {"authorization": "Bearer caller", "X-A": "1"},
        ),
        ("eng", {"authorization": "Bearer caller", "X-A": "1"}, {"Authorization": "Bearer eng", "X-A": "1"}),
        ("eng", None, {"Authorization": "Bearer eng"}),
        (None, None, None),
    ],
)
def test_engine_client_puts_its_key_in_place_of_the_callers(
    api_key: str | None, given: dict[str, str] | None, sent: dict[str, str] | None
) -> None:
    assert EngineClient("http://e:1", api_key=api_key).with_credential(given) == sent


async def test_engine_client_sends_its_key_on_probes_too(backend: RecordingBackend) -> None:
    client = EngineClient(backend.url(), api_key="eng")
    await client.start()
    try:
        assert (await client.get_text("/metrics", 5.0))[0] == 200
        reply = await client.request("POST", "/v1/chat/completions", b"{}", {"Authorization": "Bearer x"})
        reply.release()
    finally:
        await client.close()
    assert [headers["Authorization"] for _, headers in backend.seen] == ["Bearer eng", "Bearer eng"]


async def test_the_sidecar_checks_its_own_keys_and_keeps_the_callers_from_the_engine(
    backend: RecordingBackend,
) -> None:
    settings = sidecar_settings(
        ["--engine-url", backend.url(), "--engine-kind", "sim", "--api-key", "s1", "--probe-interval", "60"]
    )
    client = TestClient(TestServer(create_sidecar_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        rejected = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("wrong"))
        assert rejected.status == 401 and rejected.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await rejected.json())["error"]["code"] == "invalid_api_key"
        assert (await client.get("/v1/models")).status == 401
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status == 200, path
        accepted = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("s1"))
        assert accepted.status == 200
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    assert 'autellix_sidecar_requests_total{outcome="unauthorized"} 1.0' in metrics
    (call,) = backend.calls()
    assert "authorization" not in {name.lower() for name in call}


def test_the_key_ring_swaps_the_file_keys_keeps_the_fixed_ones_and_fails_closed() -> None:
    ring = KeyRing.of(["fixed"], ["first"])
    assert [ring.keys.matches(key) for key in ("fixed", "first", "second")] == [True, True, False]
    assert ring.reload(("first",)) == Reload(changed=False)
    assert ring.reload(("second",)) == Reload(changed=True)
    assert [ring.keys.matches(key) for key in ("fixed", "first", "second")] == [True, False, True]
    broken = ValueError("API key file 'f' holds no API key")
    assert ring.reload(broken) == Reload(False, "API key file 'f' holds no API key")
    assert ring.reload(broken) == Reload(False)  # reported once
    assert ring.keys.matches("second")  # the keys in force stay
    assert ring.reload(ValueError("cannot read")).warning == "cannot read"  # a new problem is reported
    assert ring.reload(("second",)) == Reload(False) and ring.file_error is None
    assert ring.reload(broken).warning is not None  # after a recovery, the same problem is news again


def test_auth_is_pure() -> None:
    import ast

    from tests.unit.test_proxy_purity import FORBIDDEN

    tree = ast.parse(Path(auth.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}  # fmt: skip
    assert not imported & FORBIDDEN, f"auth.py imports {sorted(imported & FORBIDDEN)}"
    assert ast.get_docstring(tree)
