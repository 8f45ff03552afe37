"""Application: a deployment registered in a workspace; it inherits the workspace's access."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.names import identity


class Application(Aggregate):
    @staticmethod
    def create_id(workspace: str, name: str) -> UUID:
        return identity("application", f"{workspace}:{name}")

    @event("Registered")
    def __init__(self, workspace: str, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self.live = True

    @event("Reregistered")
    def reregister(self) -> None:
        self.live = True

    @event("Removed")
    def remove(self) -> None:
        self.live = False
