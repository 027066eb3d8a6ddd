"""The scheduling package is pure: no IO, clock, threads or global randomness (DESIGN.md §2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import autellix.engine_adapters.scheduling as scheduling

FORBIDDEN = {"asyncio", "aiohttp", "redis", "time", "socket", "threading", "random", "datetime", "os"}
PACKAGE_DIR = Path(scheduling.__file__).parent


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")
    return roots


def test_no_module_of_the_package_imports_io_clock_or_randomness() -> None:
    modules = sorted(PACKAGE_DIR.glob("*.py"))
    assert len(modules) >= 8  # the walk really found the package
    offenders = {path.name: sorted(imported_roots(path) & (FORBIDDEN | {"__import__"})) for path in modules}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_package_alone_loads_none_of_them() -> None:
    """Load only the package's own modules (not the parent packages) and see what comes with them."""
    script = f"""
import importlib.util, sys, types
before = set(sys.modules)
for name in ("autellix", "autellix.engine_adapters"):
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = []
spec = importlib.util.spec_from_file_location(
    "autellix.engine_adapters.scheduling", {str(PACKAGE_DIR / "__init__.py")!r},
    submodule_search_locations=[{str(PACKAGE_DIR)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(" ".join(sorted({{m.split(".")[0] for m in set(sys.modules) - before}})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert "autellix" in loaded  # the package did load
    # (time is loaded by the interpreter itself at start-up, so only the AST scan above can vouch for it)
    assert loaded & {"asyncio", "aiohttp", "redis", "socket", "threading", "random"} == set()
