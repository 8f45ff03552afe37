"""The record of a handled command, saved with its events so a retry returns the first answer."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.names import identity


class CommandRecord(Aggregate):
    @staticmethod
    def create_id(command_id: str) -> UUID:
        return identity("command", command_id)

    class Handled(Aggregate.Created):
        command_id: str
        command: str
        fingerprint: str
        result_fqn: str
        aggregate_id: str
        result_version: int
        events: list[str]

    @event(Handled)
    def __init__(
        self,
        command_id: str,
        command: str,
        fingerprint: str,
        result_fqn: str,
        aggregate_id: str,
        result_version: int,
        events: list[str],
    ) -> None:
        self.command_id = command_id
        self.command = command
        self.fingerprint = fingerprint
        self.result_fqn = result_fqn
        self.aggregate_id = aggregate_id
        self.result_version = result_version
        self.events = events
