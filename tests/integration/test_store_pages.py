"""The relay's page reader (`tenantry.log.store_pages`) gives what the recorder gives."""

from __future__ import annotations

import uuid

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import ZERO_HASH, read_batch
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
