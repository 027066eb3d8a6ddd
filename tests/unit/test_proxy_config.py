"""Proxy settings: flags, YAML and environment; invalid config is one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from autellix.cli import build_parser, main
from autellix.proxy.config import ProxySettings, parse_backend
from autellix.proxy.metrics import reason_label
from autellix.settings import SettingsError, load_settings


def settings_from(argv: list[str]) -> ProxySettings:
    args = build_parser("proxy").parse_args(["proxy", *argv])
    return load_settings(ProxySettings, args)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("http://a:1", ("http://a:1", "http://a:1")),
        ("http://a:1/", ("http://a:1", "http://a:1")),
        ("e1=http://a:1", ("e1", "http://a:1")),
        ("https://a/path=x", ("https://a/path=x", "https://a/path=x")),
    ],
)
def test_backend_specs(spec, expected) -> None:
    assert parse_backend(spec) == expected


def test_repeated_backend_flags_and_scalars() -> None:
    settings = settings_from(
        ["--backend", "e1=http://a:1", "--backend", "http://b:2", "--port", "9000", "--router", "least_used"]
    )
    assert settings.backends() == [("e1", "http://a:1"), ("http://b:2", "http://b:2")]
    assert (settings.port, settings.router, settings.redis_url) == (9000, "least_used", None)


def test_yaml_carries_lists_and_router_mappings(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "backend: [e1=http://a:1, e2=http://b:2]\nredis_url: redis://127.0.0.1:6379/0\n"
        "router: autellix\nrouter_params: {short_call_max_tokens: 1024}\nprogram_ttl: 30\n"
    )
    settings = settings_from(["--config", str(config), "--program-ttl", "60"])
    assert [engine for engine, _ in settings.backends()] == ["e1", "e2"]
    assert settings.program_ttl == 60.0  # the flag wins over the file
    assert settings.router_config().params["short_call_max_tokens"] == 1024


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTELLIX_RETRIES", "5")
    settings = settings_from(["--backend", "http://a:1"])
    assert settings.retries == 5


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "no backend"),
        (["--backend", "ftp://x"], "http://"),
        (["--backend", "a=http://x:1", "--backend", "a=http://y:1"], "unique"),
        (["--backend", "http://x:1", "--redis-url", "http://r"], "redis://"),
        (["--backend", "http://x:1", "--router", "nope"], "unknown router"),
        (["--backend", "http://x:1", "--program-ttl", "100", "--stuck-ttl", "10"], "stuck_ttl"),
        (["--backend", "http://x:1", "--port", "70000"], "port"),
        (["--backend", "http://x:1", "--retries", "-1"], "retries"),
        (["--backend", "http://x:1", "--redis-key-prefix", "a{b}"], "braces"),
    ],
)
def test_invalid_settings_are_one_line(argv, fragment) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(argv)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_the_cli_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--backend", "http://x:1", "--router", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autellix proxy: error:")


def test_yaml_with_an_unknown_router_parameter(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("backend: [http://a:1]\nrouter_params: {nope: 1}\n")
    with pytest.raises(SettingsError, match="nope"):
        settings_from(["--config", str(config)])


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("short call (12 <= 2048 tokens): least-used engine", "short call"),
        ("long call, but pinned engine e3 is unavailable: least-used engine", "long call"),
        ("round robin", "round robin"),
        ("", "unspecified"),
    ],
)
def test_reason_labels_are_bounded(reason, label) -> None:
    assert reason_label(reason) == label
