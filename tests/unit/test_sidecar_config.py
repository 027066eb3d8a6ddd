"""``autellix sidecar`` settings: flags, YAML ``scheduler_params``, and one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autellix.cli import build_parser, main
from autellix.engine_adapters.config import SidecarSettings
from autellix.settings import SettingsError, add_settings_arguments, load_settings


def parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, SidecarSettings)
    return parser.parse_args(args)


def test_flags_and_yaml_feed_the_model(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "scheduler: atlas\nscheduler_params:\n  beta: 0.5\n  boundaries: [0, 1, 2]\nmax_in_flight: 4\n"
    )
    settings = load_settings(
        SidecarSettings,
        parse(
            ["--config", str(config), "--engine-url", "http://e:9/", "--engine-kind", "sglang", "--port", "0"]
        ),
    )
    assert settings.scheduler == "atlas"
    assert settings.scheduler_params == {"beta": 0.5, "boundaries": [0, 1, 2]}
    assert settings.engine_url == "http://e:9"
    assert settings.engine_kind == "sglang"
    window = settings.window_params()
    assert (window.initial, window.maximum, window.adaptive) == (4, 4, True)  # initial clamped to the bound


def test_sglang_direction_flag_has_three_states() -> None:
    assert load_settings(SidecarSettings, parse([])).sglang_low_priority_values_first is None
    on = load_settings(SidecarSettings, parse(["--sglang-low-priority-values-first"]))
    assert on.sglang_low_priority_values_first is True


@pytest.mark.parametrize(
    ("yaml_text", "flags", "fragment"),
    [
        ("scheduler_params: {bogus: 1}\n", [], "bogus"),
        ("scheduler_params: {beta: -1}\n", [], "beta"),
        ("", ["--scheduler", "srpt"], None),  # argparse choices: exits 2 itself
        ("", ["--engine-kind", "tgi"], "engine_kind"),
        ("", ["--engine-url", "localhost:8000"], "engine_url"),
        ("", ["--max-in-flight", "0"], "max_in_flight"),
        ("", ["--probe-interval", "0"], "probe_interval"),
    ],
)
def test_bad_settings_are_one_clear_line(
    tmp_path: Path, yaml_text: str, flags: list[str], fragment: str | None
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    if fragment is None:
        with pytest.raises(SystemExit):
            parse(flags)
        return
    with pytest.raises(SettingsError) as caught:
        load_settings(SidecarSettings, parse(["--config", str(config), *flags]))
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_cli_knows_the_subcommand_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    help_text = build_parser().format_help()
    assert "sidecar" in help_text
    config = tmp_path / "bad.yaml"
    config.write_text("scheduler_params: {nope: 1}\n")
    assert main(["sidecar", "--config", str(config)]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "reserve"),
    [
        ({}, 512),  # no max_tokens: the default reserve
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 16000}, 4096),  # asked for far more than it will get: capped
        ({"max_output_tokens": 9000}, 4096),  # Responses' name for it
    ],
)
def test_a_calls_kv_weight_is_its_prompt_and_its_capped_output_reserve(
    body: dict[str, object], reserve: int
) -> None:
    from autellix.engine_adapters.scheduling import QueuedCall
    from autellix.engine_adapters.sidecar import Sidecar

    settings = SidecarSettings.model_validate({"engine_url": "http://127.0.0.1:9", "engine_kind": "vllm"})
    call = QueuedCall("c", "p", size=70)
    tokens = Sidecar(settings).call_tokens(call, body)
    assert (tokens.prompt, tokens.reserve) == (70, reserve)


def test_preempt_is_off_by_default_and_takes_its_parameters(tmp_path: Path) -> None:
    assert load_settings(SidecarSettings, parse([])).preempt_settings() is None
    config = tmp_path / "sidecar.yaml"
    config.write_text("preempt: true\npreempt_params: {min_run: 0.5, level_gap: 1}\n")
    settings = load_settings(SidecarSettings, parse(["--config", str(config), "--engine-kind", "sim"]))
    params = settings.preempt_settings()
    assert params is not None and (params.min_run, params.level_gap, params.max_preemptions) == (0.5, 1, 3)
    with pytest.raises(SettingsError, match="preempt_params: unknown parameter"):
        config.write_text("preempt: true\npreempt_params: {quantum: 1}\n")
        load_settings(SidecarSettings, parse(["--config", str(config)]))


def test_preempt_is_refused_for_sglang_which_preempts_natively() -> None:
    with pytest.raises(SettingsError, match="SGLang preempts running calls natively"):
        load_settings(SidecarSettings, parse(["--engine-kind", "sglang", "--preempt"]))
