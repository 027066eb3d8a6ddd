"""Local queue policies of the sidecar and the simulation (Autellix §4; DESIGN.md §1-§2).

Pure code: time comes in as ``now``; no IO, no clock, no threads. Use :func:`get_policy` to build a
policy by name (``fcfs``, ``mlfq``, ``plas``, ``atlas``, ``srpt``, ``program-fcfs``) with parameters
from YAML or a dict.
Importing this package registers every policy module below.
"""

from . import atlas, fcfs, mlfq, plas, program_fcfs, srpt
from .base import OrderKey, QueuePolicy
from .calls import (
    Admission,
    BatchPlan,
    CapacityBudget,
    Demotion,
    Fits,
    Promotion,
    QueuedCall,
    QueueEvents,
    QueueStats,
)
from .multilevel import DEFAULT_BOUNDARIES, MultiLevelParams, MultiLevelQueue
from .registry import build_params, get_policy, policy_class, policy_names, register_policy

AtlasQueue = atlas.AtlasQueue
FcfsQueue = fcfs.FcfsQueue
MlfqQueue = mlfq.MlfqQueue
PlasQueue = plas.PlasQueue
ProgramFcfsQueue = program_fcfs.ProgramFcfsQueue
SrptQueue = srpt.SrptQueue

__all__ = [
    "DEFAULT_BOUNDARIES",
    "Admission",
    "AtlasQueue",
    "BatchPlan",
    "CapacityBudget",
    "Demotion",
    "FcfsQueue",
    "Fits",
    "MlfqQueue",
    "MultiLevelParams",
    "MultiLevelQueue",
    "OrderKey",
    "PlasQueue",
    "ProgramFcfsQueue",
    "Promotion",
    "QueueEvents",
    "QueuePolicy",
    "QueueStats",
    "QueuedCall",
    "SrptQueue",
    "build_params",
    "get_policy",
    "policy_class",
    "policy_names",
    "register_policy",
]
