"""The ``residency`` router: every call goes home; new programs go where the working set has room."""

from __future__ import annotations

import pytest

from autellix.proxy.routing import EngineView, RouteRequest, get_router


def views(*rows: tuple[str, int, float | None, bool]) -> list[EngineView]:
    return [
        EngineView(e, healthy, outstanding, resident=resident) for e, outstanding, resident, healthy in rows
    ]


@pytest.mark.parametrize(
    ("name", "pinned", "fleet", "engine", "pin"),
    [
        ("short call of a pinned program goes home", "e1",
         [("e0", 0, 0.1, True), ("e1", 9, 0.9, True)], "e1", False),
        ("new program: the emptiest working set wins over fewer calls", None,
         [("e0", 2, 0.9, True), ("e1", 3, 0.1, True)], "e1", True),
        ("no residency reported: fewest calls", None,
         [("e0", 2, None, True), ("e1", 1, None, True)], "e1", True),
        ("unhealthy home: most room, pin kept", "e0", [("e0", 0, 0.0, False), ("e1", 5, 0.5, True),
         ("e2", 5, 0.2, True)], "e2", False),
        ("tie: first listed", None, [("e0", 1, 0.5, True), ("e1", 1, 0.5, True)], "e0", True),
    ],
)  # fmt: skip
def test_residency_routing(
    name: str, pinned: str | None, fleet: list[tuple[str, int, float | None, bool]], engine: str, pin: bool
) -> None:
    router = get_router("residency")
    decision = router.route(RouteRequest("p", input_tokens=10, pinned_engine=pinned), views(*fleet))
    assert (decision.engine_id, decision.pin) == (engine, pin), name


def test_home_must_outweigh_load() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        get_router({"name": "residency", "weights": {"home": 1.0, "load": 1.0}})
