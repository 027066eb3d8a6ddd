"""The live stacks' working-set gate runs on the wall clock: its durations are the preset's, scaled by
the engines' time scale (demo.py ``scaled_gate_params``), so a live run and its simulation gate alike."""

from __future__ import annotations

import dataclasses
import json

import pytest

from autellix.demo import scaled_gate_params
from autellix.engine_adapters.config import SidecarSettings
from autellix.engine_adapters.scheduling.working_set import WorkingSetParams


@pytest.mark.parametrize("time_scale", [0.2, 1.0, 0.05])
def test_the_sidecar_gets_the_presets_gate_with_its_durations_in_wall_seconds(
    monkeypatch: pytest.MonkeyPatch, time_scale: float
) -> None:
    preset = WorkingSetParams(order="fifo", headroom=0.1, ttl_factor=3.0, beta=5.0, residency_quantum=20.0)
    monkeypatch.setenv("AUTELLIX_WORKING_SET_PARAMS", json.dumps(scaled_gate_params(preset, time_scale)))
    gate = SidecarSettings.model_validate({"working_set": "fifo"}).working_set_gate_params()
    assert gate is not None
    for name in ("residency_quantum", "ttl_default", "ttl_min", "ttl_max", "service_floor"):
        assert getattr(gate, name) == pytest.approx(getattr(preset, name) * time_scale)
    # ratios, the order and beta (a ratio of wait to service) are not durations
    unscaled = ("headroom", "order", "ttl_factor", "gap_smoothing", "beta")
    assert {n: getattr(gate, n) for n in unscaled} == {n: getattr(preset, n) for n in unscaled}
    assert {f.name for f in dataclasses.fields(WorkingSetParams)} == set(scaled_gate_params(preset, 1.0))
