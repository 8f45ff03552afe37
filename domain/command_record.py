"""The records of handled commands and applies, saved with their events so that a retry returns
the first answer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import event
from eventsourcing.utils import get_topic

from domain.apply import applied_command
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

    @classmethod
    def handled(
        cls,
        command_id: str,
        command: str,
        fingerprint: str,
        result_fqn: str,
        aggregate_id: str,
        result_version: int,
        events: list[str],
    ) -> CommandRecord.Handled:
        """The event that creates the record of `command_id`, as `CommandRecord(...)` would
        trigger it (inside `acting_as`), without building the aggregate: the command service
        only saves it. `tests/unit/test_command_record.py` holds the two to the same event."""
        return cls.Handled(
            originator_id=cls.create_id(command_id),
            originator_version=cls.INITIAL_VERSION,
            originator_topic=_TOPIC,
            timestamp=cls.Handled.create_timestamp(),
            fqn=command_id,
            command_id=command_id,
            command=command,
            fingerprint=fingerprint,
            result_fqn=result_fqn,
            aggregate_id=aggregate_id,
            result_version=result_version,
            events=events,
        )


_TOPIC = get_topic(CommandRecord)


class ApplyRecord(Aggregate):
    """The record of an applied plan (many commands, one transaction), saved with their events.

    Its id is taken from the same space as command ids: an id used for a command cannot be used
    for an apply, nor the other way round (either answers `conflict`)."""

    @staticmethod
    def create_id(apply_id: str) -> UUID:
        return CommandRecord.create_id(apply_id)

    class Handled(Aggregate.Created):
        apply_id: str
        fingerprint: str
        # What each command did, in order: {command, fqn, aggregate_id, version, events}.
        results: list[dict[str, Any]]

    @event(Handled)
    def __init__(self, apply_id: str, fingerprint: str, results: list[dict[str, Any]]) -> None:
        self.apply_id = apply_id
        self.fingerprint = fingerprint
        self.results = [applied_command(r) for r in results]
