"""The relay's page reader (`tenantry.log.store_pages`) gives what the recorder gives."""

from __future__ import annotations

import uuid

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import INTERNAL_TOPICS, ZERO_HASH, Batch, read_batch
from domain.service import TenancyService
from tenantry.log.store_pages import page_reader


def test_pages_read_as_plain_rows_are_the_recorders_pages(service: TenancyService) -> None:
    for i in range(12):
        command = COMMANDS["create_team"].model_validate({"name": f"t-{i}", "members": []})
        service.handle_batch(
            [(command, CommandContext("user:ana@example.com", str(uuid.uuid4()), "b"))]
        )
    recorder = service.recorder
    pages = page_reader(recorder)
    assert pages is not recorder  # both stores have one
    last = recorder.max_notification_id()
    assert last is not None and last > 20
    for start in (0, 1, 5, last - 3, last, last + 5):
        for limit in (1, 7, 1000):
            rows = pages.select_notifications(start, limit, inclusive_of_start=False)
            expected = recorder.select_notifications(start, limit, inclusive_of_start=False)
            assert [
                (n.id, uuid.UUID(str(n.originator_id)), n.originator_version, n.topic, n.state)
                for n in rows
            ] == [
                (n.id, uuid.UUID(str(n.originator_id)), n.originator_version, n.topic, n.state)
                for n in expected
            ]
    # Notifications as the recorder makes them, field for field.
    for row, stored in zip(
        pages.select_notifications(0, 50), recorder.select_notifications(0, 50), strict=True
    ):
        assert type(row) is type(stored)
        assert row == type(stored)(
            id=row.id,
            originator_id=row.originator_id,
            originator_version=row.originator_version,
            topic=row.topic,
            state=row.state,
        )
        assert row.id == stored.id and row.state == stored.state
    # What the relay publishes from them: the same bodies, bytes and hashes.
    assert read_batch(pages, 0, ZERO_HASH, 10_000) == read_batch(recorder, 0, ZERO_HASH, 10_000)
    assert pages.select_notifications(3, 2) == pages.select_notifications(
        2, 2, inclusive_of_start=False
    )
    assert pages.max_notification_id() == last


def test_a_page_read_by_the_relay_is_read_batch_of_the_recorder(service: TenancyService) -> None:
    """`read_page` leaves the internal rows in the store but counts them: the same events,
    bytes, hashes, last position and rows read as `read_batch` over the recorder, wherever a page
    starts or ends (on an internal row, on an event, past the end, a page of internal rows
    only)."""
    service.seed_default_environments()
    for i in range(12):
        command = COMMANDS["create_team"].model_validate({"name": f"t-{i}", "members": []})
        service.handle_batch(
            [(command, CommandContext("user:ana@example.com", str(uuid.uuid4()), "b"))]
        )
    recorder = service.recorder
    pages = page_reader(recorder)
    last = recorder.max_notification_id()
    assert last is not None
    internal = [n.id for n in recorder.select_notifications(1, last) if n.topic in INTERNAL_TOPICS]
    assert internal and internal[-1] == last  # the last row is a command record
    some_hash = "ab" * 32
    for start in (0, 1, internal[0] - 1, internal[0], internal[3], last - 1, last, last + 5):
        for limit in (1, 2, 3, 7, 1000):
            for prev in (ZERO_HASH, some_hash):
                assert pages.read_page(start, prev, limit) == read_batch(
                    recorder, start, prev, limit
                ), (start, limit)
    assert pages.read_page(internal[-1] - 1, ZERO_HASH, 1).events == []
    assert pages.read_page(internal[-1] - 1, ZERO_HASH, 1).position == internal[-1]
    assert pages.read_page(last, some_hash, 10) == Batch([], last, some_hash, 0)
