"""What the relay may take of the rows just committed: only the store's next rows, no gap."""

from __future__ import annotations

import uuid

from eventsourcing.persistence import Notification

from tenantry.log.recent import RecentCommits


def _rows(*ids: int) -> list[Notification]:
    return [Notification(uuid.uuid4(), 1, "t", b"{}", id=i) for i in ids]


def _ids(recent: RecentCommits, position: int, limit: int = 100) -> list[int] | None:
    taken = recent.take(position, limit)
    if taken is None:
        return None
    return [row.id for row in taken.select_notifications(position, limit, inclusive_of_start=False)]


def test_the_rows_right_after_the_position_are_taken_up_to_a_gap() -> None:
    recent = RecentCommits()
    recent.hand(_rows(4, 5))
    recent.hand(_rows(6))
    recent.hand(_rows(8))  # 7 was another writer's
    assert _ids(recent, 3) == [4, 5, 6]
    assert _ids(recent, 6) is None  # the store must be read for 7
    assert _ids(recent, 7) == [8]


def test_rows_not_right_after_the_position_are_not_taken() -> None:
    recent = RecentCommits()
    recent.hand(_rows(10, 11))
    assert _ids(recent, 8) is None
    assert _ids(recent, 10) == [11]  # 10 was read from the store meanwhile: dropped


def test_at_most_limit_rows_are_taken_and_a_relay_far_behind_keeps_none() -> None:
    recent = RecentCommits(limit=4)
    recent.hand(_rows(1, 2, 3))
    assert _ids(recent, 0, limit=2) == [1, 2]
    recent.hand(_rows(4, 5, 6, 7))  # 5 rows held would pass the limit: the older are dropped
    assert _ids(recent, 2) is None  # the store must be read for 3
    assert _ids(recent, 3) == [4, 5, 6, 7]
