"""A controlled clock for the events' timestamps, so that tests can say when things happened.

Events take their time from `eventsourcing.domain.datetime_now_with_tzinfo`, which asks that
module's `datetime.now`; inside `ControlledClock` it answers the clock's time, then moves it on
by one microsecond (so events of one command keep their order). `set` moves it anywhere, also
backwards (clocks of two command services that disagree)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo

import eventsourcing.domain

_TICK = timedelta(microseconds=1)


class ControlledClock:
    def __init__(self, start: datetime) -> None:
        self.time = start

    def set(self, moment: datetime) -> None:
        self.time = moment

    def advance(self, delta: timedelta) -> datetime:
        self.time += delta
        return self.time

    def _tick(self) -> datetime:
        now, self.time = self.time, self.time + _TICK
        return now

    @contextmanager
    def installed(self) -> Iterator[ControlledClock]:
        clock = self

        class _Controlled(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                return clock._tick().astimezone(tz or UTC)

        original = eventsourcing.domain.datetime
        eventsourcing.domain.datetime = _Controlled  # type: ignore[misc]
        try:
            yield self
        finally:
            eventsourcing.domain.datetime = original  # type: ignore[misc]
