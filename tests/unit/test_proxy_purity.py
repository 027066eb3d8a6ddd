"""The proxy's decision modules are pure: no IO, no clock (common rules; DESIGN.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import autellix.proxy

FORBIDDEN = {"asyncio", "aiohttp", "redis", "time", "socket", "threading", "random", "httpx"}
PURE = [
    "identity.py",
    "tenants.py",
    "tokens.py",
    "apis/base.py",
    "apis/chat.py",
    "apis/completions.py",
    "apis/responses.py",
    "apis/messages.py",
    "apis/__init__.py",
    "sse.py",
    "headers.py",
    "../api_errors.py",
    "programs/redis_scripts.py",
]
ROOT = Path(autellix.proxy.__file__).parent


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    tree = ast.parse((ROOT / name).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{name} imports {sorted(imported & FORBIDDEN)}"
    assert ast.get_docstring(tree), f"{name} needs its theory of operation"
