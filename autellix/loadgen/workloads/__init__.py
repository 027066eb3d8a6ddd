"""Workload registry: one module per workload, listed here by name.

``sharegpt`` (chat chains), ``bfcl`` (tool-use ReAct chains), ``lats`` (tree-search DAGs) and
``mixed`` (an equal mix of the three), after the paper's evaluation (reference.md §2). Adding a
workload: write a module with ``Params``, ``generate_program`` and ``WORKLOAD`` (see ``base.py``)
and add it to the tuple below. ``autellix.loadgen.arrivals.make_workload`` is the usual entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from autellix.loadgen.workloads import bfcl, lats, mixed, sharegpt
from autellix.loadgen.workloads.base import ToolTime, WorkloadDef

__all__ = ["WORKLOADS", "ToolTime", "WorkloadDef", "get_workload"]

WORKLOADS: Mapping[str, WorkloadDef[Any]] = MappingProxyType(
    {w.name: w for w in (sharegpt.WORKLOAD, bfcl.WORKLOAD, lats.WORKLOAD, mixed.WORKLOAD)}
)


def get_workload(name: str) -> WorkloadDef[Any]:
    """The registered workload called ``name`` (ValueError listing the known names otherwise)."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}") from None
