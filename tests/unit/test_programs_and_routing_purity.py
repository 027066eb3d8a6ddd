"""The pure core stays pure: the program table's memory parts and the routers import no IO and no clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import autellix.proxy.programs
import autellix.proxy.routing

FORBIDDEN = {"asyncio", "aiohttp", "redis", "time", "socket", "threading"}
PACKAGES = [Path(autellix.proxy.programs.__file__).parent, Path(autellix.proxy.routing.__file__).parent]
# a Redis-backed table will live next to the memory one: it is the IO shell, not the pure core
MODULES = sorted(path for package in PACKAGES for path in package.glob("*.py") if "redis" not in path.name)


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def module_level_random_uses(tree: ast.AST) -> list[str]:
    """Uses of the random module's hidden global generator (anything but the Random class)."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random":
            if node.attr != "Random":
                uses.append(f"random.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "random":
            uses.extend(f"from random import {a.name}" for a in node.names if a.name != "Random")
    return uses


def test_the_scan_covers_both_packages() -> None:
    names = {(path.parent.name, path.name) for path in MODULES}
    assert {("programs", "rules.py"), ("programs", "memory.py"), ("routing", "pipeline.py")} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_imports_no_io_and_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert imported_modules(tree) & FORBIDDEN == set()
    assert module_level_random_uses(tree) == []


def test_importing_the_packages_loads_no_io_module() -> None:
    # "time" is preloaded by the interpreter itself, so only the AST scan above can speak for it
    code = (
        "import sys; import autellix.proxy.programs, autellix.proxy.routing; "
        f"print(sorted(m for m in {sorted(FORBIDDEN - {'time'})!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_scanner_catches_violations() -> None:
    bad = ast.parse("import time\nfrom asyncio import sleep\nimport random\nx = random.random()\n")
    assert imported_modules(bad) & FORBIDDEN == {"time", "asyncio"}
    assert module_level_random_uses(bad) == ["random.random"]
