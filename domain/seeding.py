"""The default environments (dev, staging, prod), seeded once per store."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.names import identity

DEFAULT_ENVIRONMENTS: tuple[tuple[str, bool, str], ...] = (
    ("dev", False, "cost"),
    ("staging", False, "cost"),
    ("prod", True, "availability"),
)


class Seed(Aggregate):
    """Marks a seeding as done, so that a deleted default environment stays deleted."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("seed", name)

    class Planted(Aggregate.Created):
        name: str

    @event(Planted)
    def __init__(self, name: str) -> None:
        self.name = name
