"""A controlled clock for the events' timestamps, so that tests can say when things happened.

A `ControlledClock` is a `domain.clock.Clock`: give it to `TenancyService(clock=...)`. Each
reading answers the clock's time, then moves it on by one microsecond (so events of one command
keep their order). `set` moves it anywhere, also backwards (clocks of two command services that
disagree)."""

from __future__ import annotations

from datetime import datetime, timedelta

_TICK = timedelta(microseconds=1)


class ControlledClock:
    def __init__(self, start: datetime) -> None:
        self.time = start

    def set(self, moment: datetime) -> None:
        self.time = moment

    def advance(self, delta: timedelta) -> datetime:
        self.time += delta
        return self.time

    def __call__(self) -> datetime:
        now, self.time = self.time, self.time + _TICK
        return now
