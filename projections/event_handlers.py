"""The one registry of a view's handlers by event type: `handlers.on("team.created", ...)` as a
decorator, `handlers.get(type)` or `handlers.apply(target, events)` when applying. A type
handled twice in one view is an error at import, not a silent override."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

H = TypeVar("H", bound=Callable[..., None])


class EventHandlers(Generic[H]):
    def __init__(self) -> None:
        self._by_type: dict[str, H] = {}

    def on(self, *types: str) -> Callable[[H], H]:
        def register(handler: H) -> H:
            for type_ in types:
                if type_ in self._by_type:
                    raise ValueError(f"{type_!r} already has a handler in this view")
                self._by_type[type_] = handler
            return handler

        return register

    def get(self, type_: str) -> H | None:
        return self._by_type.get(type_)

    def apply(self, target: Any, events: Iterable[tuple[dict[str, Any], Any]]) -> None:
        """Each event's handler, if it has one, called with `target` (a connection, a view's
        held writes) and the event's body, in order."""
        for body, _ in events:
            handler = self._by_type.get(body["type"])
            if handler is not None:
                handler(target, body)
