"""The scheduler: every TENANTRY_EXPIRY_INTERVAL seconds, the commands that fell due (grants past
their deadline, and any other kind of due work registered in `domain.due`), sent as
`service:tenantry`.

Every command service runs one (`command_role`), reading the event store it writes to: no
other process, no election. Two of them, or one restarted, may send the same item; its
deterministic command id makes the second a replay of the first, and the aggregate changes
nothing for work already done (`domain.due`).

It reads from the store only the events some kind of due work declared (`DueWork.observes`,
asked for by topic), up to the last stored position when the fold began, then stands at that
position: the records between (the greater part of a log) are skipped by the store and never
read again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog
from eventsourcing.utils import get_topic

from domain import handlers  # noqa: F401  (every kind of due work registers on import)
from domain.authorization import SYSTEM_ACTOR
from domain.base import CommandContext
from domain.clock import Clock
from domain.commands import Command
from domain.due import DueWork, event_type, registered
from domain.errors import Conflict, DomainError
from domain.event_log import LazyBody, NotificationLog
from tenantry.protocol import CommandReply

log = structlog.get_logger("tenantry.scheduler")

Send = Callable[[Command, CommandContext], Awaitable[CommandReply]]


class Scheduler:
    """Folds the log into every kind of due work, then sends what is due by `clock`."""

    def __init__(
        self,
        recorder: NotificationLog,
        send: Send,
        clock: Clock,
        *,
        kinds: Sequence[Callable[[], DueWork]] | None = None,
        batch_size: int = 1000,
    ) -> None:
        self._recorder = recorder
        self._send = send
        self._clock = clock
        self._work = [kind() for kind in (registered() if kinds is None else kinds)]
        # Each declared event type -> the kinds that declared it, in registration order.
        self._observers: dict[str, list[DueWork]] = {}
        topics: set[str] = set()
        for work in self._work:
            for observed in work.observes:
                self._observers.setdefault(event_type(observed), []).append(work)
                topics.add(get_topic(observed))
        self._topics = sorted(topics)
        self._batch_size = batch_size
        self.position = 0  # the last store position folded
        # Ids answered already (by this process) and still due: not sent again while the event
        # that settles them is on its way, or ever if the aggregate found nothing to do. Kept
        # only while due, so it does not grow with the history.
        self._answered: set[str] = set()

    def fold(self) -> int:
        """Fold the declared events the log holds beyond `position`, up to its last position
        now; return how many were folded."""
        end = self._recorder.max_notification_id() or 0
        folded = 0
        while self._topics and self.position < end:
            rows = self._recorder.select_notifications(
                self.position,
                self._batch_size,
                stop=end,
                topics=self._topics,
                inclusive_of_start=False,
            )
            for row in rows:
                # Each kind reads two or three keys of the body: those alone are worked out.
                body = LazyBody(row)
                for work in self._observers[body["type"]]:
                    work.observe(body)
                self.position = row.id
            folded += len(rows)
            if len(rows) < self._batch_size:
                break
        # Every declared event up to `end` is folded: the rest up to there is nobody's.
        self.position = max(self.position, end)
        return folded

    async def tick(self) -> list[CommandReply]:
        """Fold the log, then send every command due now; the replies of those answered."""
        await asyncio.to_thread(self.fold)
        at = self._clock()
        replies = []
        due = [item for work in self._work for item in work.due(at)]
        self._answered &= {item.command_id for item in due}
        for item in due:
            if item.command_id in self._answered:
                continue
            context = CommandContext(SYSTEM_ACTOR, item.command_id, item.command_id)
            try:
                reply = await self._send(item.command, context)
            except Conflict as exc:
                log.warning("scheduler.conflict", command_id=item.command_id, error=str(exc))
                continue  # clashing writes: again next tick
            except DomainError as exc:
                log.warning("scheduler.refused", command_id=item.command_id, error=str(exc))
                self._answered.add(item.command_id)
                continue
            self._answered.add(item.command_id)
            replies.append(reply)
            log.info(
                "scheduler.sent",
                command=item.command.wire_name,
                command_id=item.command_id,
                events=reply.events,
                replayed=reply.replayed,
            )
        return replies

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Tick every `interval` seconds until `stop`; a failing tick (the store away) is
        logged and tried again at the next."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
