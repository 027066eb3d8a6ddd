"""A consistent-hash ring with virtual nodes, for session affinity.

Theory of operation
-------------------
1. Each engine owns ``vnodes`` points on a 64-bit ring, at ``blake2b(f"{engine_id}#{i}")``. A key
   (a program id) belongs to the first point at or after ``blake2b(key)``, wrapping around.
2. Points are a stable function of the engine id only (blake2b, not Python's salted ``hash``), so every
   proxy replica and every run computes the same ring for the same engines.
3. Stability: removing an engine moves exactly the keys it owned (to the next points); adding one
   moves only the keys it now owns. With ``vnodes`` points per engine each engine's share stays close
   to 1/n (a few percent spread at the default of 100).
4. The ring is rebuilt only when the set of engines changes; a lookup is one hash and one bisection.
   Equal points (a 2^-64 event) are ordered by engine id, so the ring never depends on input order.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence


def ring_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, vnodes: int = 100) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes}")
        self.vnodes = vnodes
        self._members: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []
        self._engine_points: dict[str, list[int]] = {}

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def owner(self, key: str, engine_ids: Sequence[str]) -> str:
        """The engine among ``engine_ids`` (non-empty) that owns ``key``."""
        members = tuple(engine_ids)
        if not members:
            raise ValueError("a hash ring needs at least one engine")
        if members != self._members:
            self._rebuild(members)
        index = bisect.bisect_left(self._points, ring_hash(key))
        return self._owners[index if index < len(self._owners) else 0]

    def _rebuild(self, members: tuple[str, ...]) -> None:
        # keep only current members' points so the cache cannot grow with every engine ever seen
        cached = {engine: self._engine_points.get(engine) for engine in members}
        self._engine_points = {
            engine: points if points is not None else self._points_of(engine)
            for engine, points in cached.items()
        }
        ring = sorted((point, engine) for engine in set(members) for point in self._engine_points[engine])
        self._points = [point for point, _ in ring]
        self._owners = [engine for _, engine in ring]
        self._members = members

    def _points_of(self, engine_id: str) -> list[int]:
        return [ring_hash(f"{engine_id}#{i}") for i in range(self.vnodes)]
