"""The scheduler's due work for access reviews: close every open review whose `due` has passed
(`domain.due`), its undecided items getting `on_undecided` as the system's decision."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from domain.access_review import AccessReview
from domain.commands import CloseDueAccessReview
from domain.due import DueCommand, due_command_id, due_work, event_type, events_of, parse_time


@due_work
class AccessReviewsDue:
    """The open reviews and when each is due. A review name is used once (its identity), so
    the review names its due item."""

    observes: ClassVar[tuple[type[Any], ...]] = events_of(AccessReview, "Opened", "Closed")

    def __init__(self) -> None:
        self._due: dict[str, datetime] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        kind = body["type"]
        if kind == _OPENED:
            self._due[str(body["fqn"])] = parse_time(str(body["data"]["due"]))
        elif kind == _CLOSED:
            self._due.pop(str(body["fqn"]), None)

    def due(self, at: datetime) -> list[DueCommand]:
        return [
            DueCommand(
                CloseDueAccessReview(review=name),
                due_command_id("access_review.closed", name),
            )
            for name, due in sorted(self._due.items(), key=lambda item: (item[1], item[0]))
            if due <= at
        ]


_OPENED, _CLOSED = (event_type(observed) for observed in AccessReviewsDue.observes)
