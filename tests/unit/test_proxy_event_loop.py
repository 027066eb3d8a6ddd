"""Which event loop the services run on (serving.py rule 6)."""

from __future__ import annotations

import pytest

from autellix.serving import loop_factory

uvloop = pytest.importorskip("uvloop")


@pytest.mark.parametrize(
    ("choice", "expected"), [("", True), ("auto", True), ("uvloop", True), ("asyncio", False)]
)
def test_uvloop_unless_asked_for_asyncio(choice: str, expected: bool) -> None:
    factory = loop_factory(choice)
    assert (factory is uvloop.new_event_loop) is expected and (factory is None) is not expected


def test_an_unknown_loop_is_an_error() -> None:
    with pytest.raises(ValueError, match="AUTELLIX_EVENT_LOOP"):
        loop_factory("trio")
