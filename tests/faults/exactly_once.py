"""What "nothing acknowledged lost or doubled" means, read straight from the event store: each
acknowledged command's record and events where its answer said, once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from eventsourcing.utils import get_topic

from domain.command_record import CommandRecord
from domain.event_log import INTERNAL_TOPICS, unchained_body
from domain.positions import position_of
from domain.service import TenancyService

_RECORD_TOPIC = get_topic(CommandRecord.Handled)


def check_stored(store: TenancyService, acked: dict[str, dict[str, Any]]) -> None:
    """Each acknowledged command's record is stored where its answer said, with its events."""
    for command_id, answer in acked.items():
        record: CommandRecord = store.repository.get(CommandRecord.create_id(command_id))
        assert record.events == answer["events"], command_id
        assert position_of(store.recorder, record.id, record.version) == answer["position"]
        assert store.repository.get(uuid.UUID(answer["aggregate_id"])).version >= 1


def command_records(store: TenancyService) -> list[uuid.UUID]:
    """The ids of every stored command record, as often as each is stored."""
    notifications = store.recorder.select_notifications(None, 1_000_000)
    return [n.originator_id for n in notifications if n.topic == _RECORD_TOPIC]


def events_by_command(store: TenancyService) -> dict[str, list[str]]:
    """The types of every published event, in store order, by the command id that wrote it."""
    by_command: dict[str, list[str]] = defaultdict(list)
    for n in store.recorder.select_notifications(None, 1_000_000):
        if n.topic not in INTERNAL_TOPICS:
            body = unchained_body(n)
            by_command[body["command_id"]].append(body["type"])
    return by_command
