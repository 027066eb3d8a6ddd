"""Settings come from flags, AUTELLIX_* environment and YAML, in that order; errors are one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from autellix.cli import main
from autellix.settings import SettingsError, add_settings_arguments, load_settings
from autellix.simulator.config import SimEngineSettings


def parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, SimEngineSettings)
    return parser.parse_args(args)


def test_defaults_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTELLIX_PORT", raising=False)
    settings = load_settings(SimEngineSettings, parse([]))
    assert settings.port == 8000
    assert settings.prefix_caching is True


def test_flags_beat_environment_beat_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("port: 7001\ntime_scale: 0.5\nprofile: unit\n")
    monkeypatch.setenv("AUTELLIX_PORT", "7002")
    monkeypatch.setenv("AUTELLIX_TIME_SCALE", "0.25")
    settings = load_settings(SimEngineSettings, parse(["--config", str(config), "--port", "7003"]))
    assert settings.port == 7003  # flag
    assert settings.time_scale == 0.25  # environment over YAML
    assert settings.profile == "unit"  # YAML over default


def test_boolean_flags_have_a_negative_form() -> None:
    settings = load_settings(SimEngineSettings, parse(["--no-prefix-caching"]))
    assert settings.prefix_caching is False


@pytest.mark.parametrize(
    ("yaml_text", "flags", "fragment"),
    [
        ("port: [1, 2]\n", [], "port"),
        ("nonsense_key: 1\n", [], "unknown setting 'nonsense_key'"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("port: : :\n", [], "not valid YAML"),
        ("", ["--time-scale", "-1"], "time_scale"),
        ("", ["--port", "99999"], "port"),
    ],
)
def test_bad_settings_are_one_clear_line(
    tmp_path: Path, yaml_text: str, flags: list[str], fragment: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SettingsError) as caught:
        load_settings(SimEngineSettings, parse(["--config", str(config), *flags]))
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(SimEngineSettings, parse(["--config", str(tmp_path / "absent.yaml")]))


def test_cli_exits_2_with_one_line_on_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim-engine", "--time-scale", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autellix sim-engine: error:") and "time_scale" in err
    assert len(err.splitlines()) == 1


def test_console_script_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "autellix", "--help"], capture_output=True, text=True, check=True
    )
    assert "sim-engine" in out.stdout
    sub = subprocess.run(
        [sys.executable, "-m", "autellix", "sim-engine", "--help"], capture_output=True, text=True, check=True
    )
    for flag in ["--profile", "--time-scale", "--scheduling-policy", "--max-num-seqs", "--no-prefix-caching"]:
        assert flag in sub.stdout
