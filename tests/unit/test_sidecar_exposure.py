"""auth.py rule 8: a sidecar beyond loopback needs a key, unless told ``--insecure-no-auth``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from autellix.auth import is_loopback_host
from autellix.cli import main
from autellix.engine_adapters.config import SidecarSettings


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        (" LOCALHOST ", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("192.168.1.1", False),
        ("sidecar.default.svc", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_keyless_sidecar_on_all_interfaces_is_refused() -> None:
    with pytest.raises(ValidationError, match="reachable from other machines") as caught:
        SidecarSettings.model_validate({"host": "0.0.0.0"})
    assert "--insecure-no-auth" in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"host": "0.0.0.0", "api_key": ["k1"]},
        {"host": "0.0.0.0", "insecure_no_auth": True},
        {"host": "127.0.0.1"},
        {"host": "::1"},
    ],
)
def test_a_key_loopback_or_the_explicit_opt_out_is_accepted(settings: dict[str, object]) -> None:
    assert SidecarSettings.model_validate(settings).host == settings["host"]


def test_a_key_file_counts_as_a_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("secret-key\n")
    assert SidecarSettings.model_validate({"host": "0.0.0.0", "api_key_file": str(keys)}).api_key_file == str(
        keys
    )


def test_the_cli_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sidecar", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autellix sidecar: error:")
    assert "no api_key or api_key_file" in err and "--insecure-no-auth" in err
    assert len(err.splitlines()) == 1
