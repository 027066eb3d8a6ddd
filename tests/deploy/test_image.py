"""The container image definition (Docker is not runnable here): the Dockerfile parsed and checked, its
build context, and the wheel it installs (built the way the Dockerfile builds it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from autellix.engine_adapters.config import SidecarSettings
from autellix.proxy.config import ProxySettings
from autellix.simulator.config import SimEngineSettings
from tests.deploy.support import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
IGNORE_FILE = DEPLOY / "docker" / "Dockerfile.dockerignore"
# Files under autellix/ that the package reads at run time besides its modules.
DOCUMENTATION_ONLY = {"README.md"}


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM it belongs to


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions, continuation lines joined and comments dropped (no heredocs or parser directives)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def test_dockerfile_builds_one_non_root_image_that_runs_autellix() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    known = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG", "LABEL"}
    assert {i.keyword for i in instructions} <= known
    bases = [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    final = final_stage(instructions)
    keywords = [i.keyword for i in final]
    user = next(i for i in reversed(final) if i.keyword == "USER").arguments
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) == 10001  # numeric, so runAsNonRoot can verify it
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    entrypoint = json.loads(next(i for i in final if i.keyword == "ENTRYPOINT").arguments)
    assert entrypoint == ["autellix"]  # exec form: the container's args are the subcommand and flags
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["autellix"] == "autellix.cli:main"
    installs = [i.arguments for i in final if i.keyword == "RUN" and "pip install" in i.arguments]
    assert any(re.search(r"\bautellix\b", run) for run in installs)
    assert any("autellix --version" in i.arguments for i in final if i.keyword == "RUN")
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.arguments.split()}
    defaults = {
        model.model_fields["port"].default for model in (ProxySettings, SidecarSettings, SimEngineSettings)
    }
    assert defaults <= exposed


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    sources = [
        source
        for i in instructions
        if i.keyword == "COPY" and "--from=" not in i.arguments
        for source in i.arguments.split()[:-1]
    ]
    assert sources
    patterns = [
        line.strip()
        for line in IGNORE_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**"  # everything is excluded (.venv, results, .git) except what is named
    for source in sources:
        assert (ROOT / source).exists(), source
        name = source.rstrip("/")
        assert f"!{name}" in patterns or f"!{name}/**" in patterns, f"{source} is excluded from the context"


def test_the_wheel_the_image_installs_carries_every_runtime_file(tmp_path: Path) -> None:
    """Built from the Dockerfile's context (pyproject.toml, README.md, autellix/) as `pip wheel .` does."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "autellix", context / "autellix", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{result.stderr[-2000:]}")
    (wheel,) = (tmp_path / "wheels").glob("autellix-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    needed = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "autellix").rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
        and path.name not in DOCUMENTATION_ONLY
    }
    assert needed, "expected data files (e.g. the program table's Lua functions)"
    missing = sorted(needed - packed)
    assert not missing, f"missing from the wheel, so from the image: {missing} (declare them as package data)"
    assert {p for p in packed if p.endswith(".py")} >= {"autellix/cli.py", "autellix/proxy/app.py"}
