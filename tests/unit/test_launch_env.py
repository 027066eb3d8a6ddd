"""What environment a launched service sees (autellix/launch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autellix.launch import ServiceProcess


@pytest.mark.parametrize("inherit", [True, False])
def test_a_self_contained_stack_drops_the_callers_autellix_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inherit: bool
) -> None:
    monkeypatch.setenv("AUTELLIX_API_KEY", "from-the-shell")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    script = "import os; print(os.environ.get('AUTELLIX_API_KEY'), os.environ.get('AUTELLIX_OWN'), " \
             "os.environ.get('UNRELATED_SETTING'))"  # fmt: skip
    service = ServiceProcess(
        name="printer",
        args=[sys.executable, "-c", script],
        url="http://127.0.0.1:1",
        log_path=tmp_path / "printer.log",
        env={"AUTELLIX_OWN": "set-by-the-launcher"},
        inherit_autellix_env=inherit,
    ).launch()
    assert service.process is not None and service.process.wait(timeout=30) == 0
    seen = (tmp_path / "printer.log").read_text().split()
    assert seen == ["from-the-shell" if inherit else "None", "set-by-the-launcher", "kept"]
