"""The clock events take their time from: one port, the system clock unless a caller gives one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

# A clock answers the current moment, timezone-aware. The command service reads it once per event
# it triggers; tests give a controlled one instead of patching a library's module globals.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)
