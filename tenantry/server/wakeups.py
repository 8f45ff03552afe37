"""Waking followers of the event log as soon as something is committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import structlog
from eventsourcing.persistence import ApplicationRecorder, Notification

from domain.waiting import StreamMark
from tenantry.log.recent import RecentCommits

log = structlog.get_logger("tenantry.server.wakeups")


@dataclass(frozen=True)
class FollowedLog:
    """What the followers of the log (relay, projections, checkpoints) need of the event store:
    its recorder, to read, and to be woken when this process saves (else they poll, and a
    PostgreSQL NOTIFY wakes them). Not the command application: only the command role has it."""

    recorder: ApplicationRecorder
    _listeners: list[Callable[[Sequence[Notification]], None]]
    # How far the relay of this process has put this process's commits on the stream: the
    # views' runner of the same process waits for it (one per process: see `_followed`).
    stream: StreamMark = field(default_factory=StreamMark)

    def wakeups(
        self, store_env: dict[str, str], *, take_rows: bool = False, relaying: bool = False
    ) -> Wakeups:
        """One follower's wake-ups: an event of its own (each follower clears its own, which
        would swallow another's wake-up), set after every save in this process and, while
        `Wakeups.listen` runs, on PostgreSQL's NOTIFY; with `take_rows`, the rows saved here
        are handed to its `recent` first. The relay's (`relaying`) also marks them committed
        in `stream`, for the relay to mark them on the stream once acked."""
        recent = RecentCommits() if take_rows else None
        event = asyncio.Event()
        commits = self.stream if relaying else None
        self._listeners.append(wake_on_save(asyncio.get_running_loop(), event, recent, commits))
        return Wakeups(event, recent, self.recorder, store_env)


@dataclass(frozen=True)
class Wakeups:
    """What wakes one follower of the log: `event`, set after every save in this process (the
    rows handed to `recent` first, if it takes them) and on every PostgreSQL NOTIFY while
    `listen` runs."""

    event: asyncio.Event
    recent: RecentCommits | None
    _recorder: ApplicationRecorder
    _store_env: dict[str, str]

    async def listen(self, stop: asyncio.Event) -> None:
        """Until `stop`: PostgreSQL's NOTIFYs set `event` (nothing to do on SQLite)."""
        await listen_postgres(self._recorder, self._store_env, [self.event], stop)


def wake_on_save(
    loop: asyncio.AbstractEventLoop,
    event: asyncio.Event,
    recent: RecentCommits | None = None,
    commits: StreamMark | None = None,
) -> Callable[[Sequence[Notification]], None]:
    """A TenancyService listener (called from the saving thread) that sets `event` on `loop`,
    after handing the committed rows to `recent` if given (in one callback: a follower that
    clears `event` and then takes from `recent` misses no row without being woken again), and
    marking them committed in `commits` if given."""

    def woken(rows: Sequence[Notification]) -> None:
        if recent is not None:
            recent.hand(rows)
        if commits is not None and rows:
            commits.commit(max(row.id for row in rows))
        event.set()

    def listener(rows: Sequence[Notification]) -> None:
        loop.call_soon_threadsafe(woken, rows)

    return listener


async def listen_postgres(
    recorder: ApplicationRecorder,
    store_env: dict[str, str],
    events: list[asyncio.Event],
    stop: asyncio.Event,
) -> None:
    """PostgreSQL: the event store NOTIFYs on every insert; LISTEN and set `events`.

    A notification can be lost (a dropped connection), so followers keep polling as well; this
    only makes them react within milliseconds instead of a poll interval."""
    from eventsourcing.postgres import PostgresApplicationRecorder

    if not isinstance(recorder, PostgresApplicationRecorder):
        return
    channel = recorder.channel_name
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                dbname=store_env["POSTGRES_DBNAME"],
                host=store_env["POSTGRES_HOST"],
                port=int(store_env["POSTGRES_PORT"]),
                user=store_env["POSTGRES_USER"],
                password=store_env.get("POSTGRES_PASSWORD") or None,
                autocommit=True,
            ) as conn:
                await conn.execute(f'LISTEN "{channel}"')
                log.info("wakeups.listening", channel=channel)
                while not stop.is_set():
                    # notifies() ends after its timeout: that is when we look at `stop`.
                    async for _ in conn.notifies(timeout=1.0):
                        for event in events:
                            event.set()
        except psycopg.Error as exc:
            log.warning("wakeups.listen_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
