"""The views' one registry of handlers by event type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from projections.event_handlers import EventHandlers

_Handler = Callable[[list[str]], None]


def test_a_handler_is_found_by_each_of_its_types() -> None:
    handlers: EventHandlers[_Handler] = EventHandlers()

    @handlers.on("team.created", "team.recreated")
    def created(seen: list[str]) -> None:
        seen.append("created")

    assert handlers.get("team.created") is created
    assert handlers.get("team.recreated") is created
    assert handlers.get("team.member_added") is None


def test_a_type_handled_twice_in_one_view_is_refused() -> None:
    handlers: EventHandlers[_Handler] = EventHandlers()
    handlers.on("team.created")(lambda seen: None)
    with pytest.raises(ValueError, match=r"team\.created"):
        handlers.on("team.created")(lambda seen: None)
