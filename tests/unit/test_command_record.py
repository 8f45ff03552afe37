"""A command's record is saved as the event `CommandRecord(...)` would trigger, made directly."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.base import CommandContext, acting_as
from domain.command_record import CommandRecord
from tests.clock import ControlledClock

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_the_record_event_is_the_one_the_aggregate_triggers() -> None:
    args = ("cmd-1", "create_team", "f" * 64, "risk", "9c1d…", 1, ["team.created"])
    context = CommandContext("user:ana@example.com", "cmd-1", "corr-1")
    with acting_as(context, ControlledClock(START)):
        made = CommandRecord.handled(*args)
    with acting_as(context, ControlledClock(START)):
        (triggered,) = CommandRecord(*args).collect_events()

    assert type(made) is type(triggered)
    assert made.model_dump() == triggered.model_dump()
    assert made.originator_id == CommandRecord.create_id("cmd-1")
    record = CommandRecord.Handled.mutate(made, None)
    assert isinstance(record, CommandRecord)
    assert (record.command, record.result_version, record.fqn()) == ("create_team", 1, "cmd-1")
