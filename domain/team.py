"""Team: a named group of users; a member's access is the highest of theirs and the team's."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import PreconditionFailed
from domain.names import identity


class Team(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("team", name)

    @event("Created")
    def __init__(self, name: str, members: list[str]) -> None:
        self.name = name
        self.members = list(dict.fromkeys(members))

    def add_member(self, user: str) -> None:
        if user not in self.members:
            self._member_added(user=user)

    @event("MemberAdded")
    def _member_added(self, user: str) -> None:
        self.members.append(user)

    def remove_member(self, user: str) -> None:
        if user not in self.members:
            raise PreconditionFailed(
                f"{user!r} is not a member of team {self.name!r}", team=self.name, user=user
            )
        self._member_removed(user=user)

    @event("MemberRemoved")
    def _member_removed(self, user: str) -> None:
        self.members.remove(user)
