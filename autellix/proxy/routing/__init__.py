"""Routing between engines: filters → weighted scorers → picker, one policy per module, chosen by config.

Pure core: nothing here imports asyncio, aiohttp, redis, time or socket. Time is ``RouteRequest.now``;
randomness is a seeded ``random.Random`` owned by the policy. Importing the package registers every
policy below with :func:`register_router`.
"""

from . import (  # noqa: F401  (imported to register the policies)
    autellix_locality,
    least_used,
    power_of_two,
    prefix_affinity,
    random_pick,
    residency,
    round_robin,
    session_affinity,
    weighted,
)
from .autellix_locality import AutellixRouter
from .base import EngineView, NoEngineAvailable, RouteDecision, Router, RouteRequest, ScoreRow
from .hash_ring import HashRing
from .least_used import LeastUsedRouter
from .policy import RoutingPolicy
from .power_of_two import PowerOfTwoRouter
from .prefix_affinity import PrefixAffinityRouter
from .prefix_index import PrefixIndex
from .random_pick import RandomRouter
from .registry import RouterConfig, build_params, get_router, register_router, router_class, router_names
from .residency import ResidencyRouter
from .round_robin import RoundRobinRouter
from .session_affinity import SessionAffinityRouter
from .weighted import WeightedRouter

__all__ = [
    "AutellixRouter",
    "EngineView",
    "HashRing",
    "LeastUsedRouter",
    "NoEngineAvailable",
    "PowerOfTwoRouter",
    "PrefixAffinityRouter",
    "PrefixIndex",
    "RandomRouter",
    "ResidencyRouter",
    "RoundRobinRouter",
    "RouteDecision",
    "RouteRequest",
    "Router",
    "RouterConfig",
    "RoutingPolicy",
    "ScoreRow",
    "SessionAffinityRouter",
    "WeightedRouter",
    "build_params",
    "get_router",
    "register_router",
    "router_class",
    "router_names",
]
