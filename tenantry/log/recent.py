"""The rows this process just committed, handed to the relay and the views' runner so they need
not read them back.

The saving thread hands them over on the event loop with the wake-up (`tenantry.server.wakeups`);
the relay takes them on the loop, the runner in its worker thread (hence the lock).
They stand in for a read of the store only where they are exactly what that read would give: the
rows right after the follower's position, with no position missing. Anything else (rows another
process committed, a follower that lags or has just started, a resync) is read from the store as
before, so store order and exactly-once are decided the same way they always were."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from eventsourcing.persistence import Notification


class RecentCommits:
    """Committed rows, oldest first, not yet taken. Holds at most `limit`: a relay that far
    behind reads the store anyway, so older rows are dropped rather than kept."""

    def __init__(self, limit: int = 4000) -> None:
        self._rows: deque[Notification] = deque()
        self._limit = limit
        self._lock = threading.Lock()

    def hand(self, rows: Sequence[Notification]) -> None:
        """Rows of one commit (on the event loop, in commit order)."""
        ordered = sorted(rows, key=lambda row: row.id)
        with self._lock:
            if len(self._rows) + len(ordered) > self._limit:
                self._rows.clear()
            self._rows.extend(ordered)

    def holds_rows(self) -> bool:
        """Whether any row handed over is not taken yet."""
        with self._lock:
            return bool(self._rows)

    def take(self, position: int, limit: int) -> TakenRows | None:
        """The rows right after store `position`, up to `limit` and to the first missing
        position: what reading the store there would start with. None if the rows held don't
        start right there (read the store)."""
        with self._lock:
            return self._take(position, limit)

    def _take(self, position: int, limit: int) -> TakenRows | None:
        rows = self._rows
        while rows and rows[0].id <= position:
            rows.popleft()  # published already (read from the store, or taken before)
        if not rows or rows[0].id != position + 1:
            return None
        taken: list[Notification] = []
        while rows and len(taken) < limit and rows[0].id == position + len(taken) + 1:
            taken.append(rows.popleft())
        return TakenRows(taken)


class TakenRows:
    """Taken rows as a `NotificationLog` for `read_batch`, the one reader of the log: asked
    only for the page they are."""

    def __init__(self, rows: list[Notification]) -> None:
        self._rows = rows

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = (start or 0) + (0 if inclusive_of_start else 1)
        if stop is not None or topics or not self._rows or self._rows[0].id != first:
            raise ValueError("taken rows answer only the page they are")
        return self._rows[:limit]

    def max_notification_id(self) -> int | None:
        return self._rows[-1].id if self._rows else None
