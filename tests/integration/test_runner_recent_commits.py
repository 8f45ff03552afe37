"""The views' runner handed the rows this process just committed (`tenantry.log.recent`, as the
projections role wires it): it applies them without reading the event store back, and where they
are not the store's next rows (another writer's commit in between) it reads the store as before.
Either way the views are what a rebuild from the store gives."""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import Notification

from domain.event_log import NotificationLog
from domain.service import TenancyService
from projections.runner import ProjectionRunner, rebuild
from projections.store import ViewStore
from tenantry.log.recent import RecentCommits
from tests.integration.teams import create_team
from tests.integration.views import dump


class _CountedReads:
    """The event store's log, counting the reads made of it (the runner's only way to it)."""

    def __init__(self, log: NotificationLog) -> None:
        self._log = log
        self.reads = 0

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        self.reads += 1
        return self._log.select_notifications(
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )

    def max_notification_id(self) -> int | None:
        return self._log.max_notification_id()


def test_the_runner_applies_the_rows_handed_over_and_reads_what_another_writer_committed(
    service: TenancyService, store_env: dict[str, str]
) -> None:
    recent = RecentCommits()
    service.listeners.append(recent.hand)
    log = _CountedReads(service.recorder)
    views = ViewStore.in_memory()
    runner = ProjectionRunner(log, views, take_rows=recent.take)
    runner.catch_up()  # the seed, committed before any row was handed: read
    reads = log.reads
    assert reads > 0

    for i in range(3):
        create_team(service, f"here-{i}")
        assert runner.catch_up() == 2  # the team's event and the command's record
    assert log.reads == reads  # taken as handed, not read back

    other = TenancyService(store_env)  # another process's commits: nothing handed
    try:
        create_team(other, "there-0")
        create_team(service, "here-3")  # handed, but not right after the views' position
        assert runner.catch_up() == 4
        assert log.reads > reads  # read from the store
        create_team(other, "there-1")
        reads = log.reads
        assert runner.catch_up() == 2
        assert log.reads > reads
        create_team(service, "here-4")
        reads = log.reads
        assert runner.catch_up() == 2
        assert log.reads == reads  # right after the position again: taken
    finally:
        other.close()

    assert runner.position() == service.recorder.max_notification_id()
    rebuilt = ViewStore.in_memory()
    rebuild(service.recorder, rebuilt)
    assert dump(views) == dump(rebuilt)
