"""Waking followers of the event log as soon as something is committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog
from eventsourcing.persistence import ApplicationRecorder

log = structlog.get_logger("tenantry.server.wakeups")


def wake_on_save(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """A TenancyService listener (called from a worker thread) that sets `event` on `loop`."""

    def listener() -> None:
        loop.call_soon_threadsafe(event.set)

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
