"""Feeds the event log into the views, exactly once.

Each batch of notifications is applied in one view-store transaction together with the tracking
row (position and chain hash) and the last published event applied (its position and chain
hash, which the projections role compares with the stream: `tenantry.log.agreement`): a crash
loses a whole batch or nothing, and a batch is never applied twice. Internal notifications
(idempotency records, the seed marker) are skipped but still move the position, so a command
reply's `position` is reached once its command is applied."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from sqlalchemy import Connection, inspect

from domain.event_log import NotificationLog, Published, read_batch
from domain.waiting import StreamMark, first_of, set_on
from projections import access, access_requests, access_reviews, audit, directory, temporal_access
from projections.store import (
    Tracking,
    ViewStore,
    read_tracking,
    write_last_event,
    write_tracking,
)
from tenantry.log.store_pages import page_reader

# A view's part of a batch: applies the published event bodies, in log order, on `conn`.
Projector = Callable[[Connection, Sequence[Published]], None]
# The rows this process just committed, right after a store position and up to a limit, as a
# log to read them from: exactly what reading the store there would give first; None when the
# rows held don't start right there (`tenantry.log.recent`, handed over with each commit).
TakeRows = Callable[[int, int], NotificationLog | None]
# Each view reads only its own tables: their order does not matter, and each takes the whole
# batch at once (one audit insert per batch, the temporal view's clock read once).
PROJECTORS: tuple[Projector, ...] = (
    directory.apply_batch,
    access.apply_batch,
    audit.apply_batch,
    temporal_access.apply_batch,
    access_requests.apply_batch,
    access_reviews.apply_batch,
)
_MAX_BACKOFF = 30.0
# The longest the views wait for the relay of their process to have this process's commits on
# the stream before applying them anyway (a relay stopped, failing or far behind).
AFTER_STREAM_WITHIN = 0.01

log = structlog.get_logger("tenantry.projections")


class Progress:
    """Lets coroutines wait until the runner has applied another batch, and tells them, without a
    read, what it knows: the last position it applied, and whether it is applying a batch now.
    The store may be further (another runner on it) or, right after views were swapped in
    (`projections.swap`), behind it until the runner's next batch: a reader that trusts
    `position` checks the position its answer was read at (`behind` corrects it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.position = 0
        self.applying = False

    def notify(self, position: int) -> None:
        self.position = position
        event, self._event = self._event, asyncio.Event()
        event.set()

    def behind(self, position: int) -> None:
        """The store was read at `position`, behind what this runner last applied."""
        self.position = min(self.position, position)

    def next_batch(self) -> asyncio.Event:
        """An event set when the next batch is applied. Take it *before* looking at the
        position, so that a batch applied in between is not missed."""
        return self._event


class ProjectionRunner:
    def __init__(
        self,
        recorder: NotificationLog,
        store: ViewStore,
        *,
        batch_size: int = 500,
        projectors: Sequence[Projector] = PROJECTORS,
        take_rows: TakeRows | None = None,
        after: StreamMark | None = None,
        after_within: float = AFTER_STREAM_WITHIN,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # The store's pages as plain rows (no `UUID` made of every row's id, no dict of every
        # PostgreSQL row): what the relay reads too (`tenantry.log.store_pages`).
        self._recorder = page_reader(recorder)
        self._store = store
        self._batch_size = batch_size
        self._projectors = tuple(projectors)
        self._take_rows = take_rows
        # The relay of this process, which goes first (see `_applying`).
        self._after = after
        self._after_within = after_within
        self.progress = Progress()
        self._applied = 0  # the position the last batch applied here reached
        self._layout_checked = False

    def position(self) -> int:
        """The last position the views have applied."""
        return self._store.position()

    def catch_up(self, limit: int | None = None) -> int:
        """Apply what the log holds beyond the tracking position, batch by batch, at most `limit`
        notifications in all; return how many notifications were consumed."""
        if not self._layout_checked:
            refuse_old_layout(self._store)
            self._layout_checked = True
        consumed = 0
        while limit is None or consumed < limit:
            size = self._batch_size if limit is None else min(self._batch_size, limit - consumed)
            applied = self._apply_batch(size)
            consumed += applied
            if applied < size:
                break  # the log held no more when read: a further look would find nothing
        return consumed

    def _apply_batch(self, size: int) -> int:
        started = time.perf_counter()
        with self._store.write() as conn:
            # Read under the lock: another runner on this store may just have moved it.
            before = read_tracking(conn, lock=True)
            # The rows just committed in this process when they are the next ones (once
            # caught up, the usual case): not read back from the event store.
            taken = self._take_rows(before.position, size) if self._take_rows else None
            batch = read_batch(taken or self._recorder, before.position, before.hash, size)
            if not batch.read:
                return 0
            for project in self._projectors:
                project(conn, batch.events)
            after = Tracking(batch.position, batch.hash)
            write_tracking(conn, before, after)
            if batch.events:
                write_last_event(conn, batch.events[-1].body["position"], batch.hash)
        self._applied = after.position
        log.debug(
            "projection.applied",
            notifications=batch.read,
            position=after.position,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return batch.read

    async def _applying(self) -> int:
        """`catch_up` of one batch in a worker thread, `progress.applying` meanwhile.

        When a relay runs in this process (`after`) and has not yet put on the stream what
        this process committed, the batch waits for it first (at most `after_within` seconds):
        the thread holds the interpreter for the whole batch, so that begun at once it held up
        the relay's publish and ack, and the command's reply, by as long. A reader waiting for
        a position meanwhile waits for this batch (`applying` is set already)."""
        self.progress.applying = True
        try:
            if self._after is not None and self._after.behind():
                await self._after.caught_up(self._after_within)
            return await asyncio.to_thread(self.catch_up, self._batch_size)
        finally:
            self.progress.applying = False

    async def run(
        self, stop: asyncio.Event, wakeup: asyncio.Event, poll_interval: float = 0.25
    ) -> None:
        """Apply batches until `stop` is set; when idle, wait for `wakeup` or `poll_interval`.

        A failing batch (a bad event, the database away) is logged and retried with a growing
        delay: the views stop where they are rather than skip an event."""
        failures = 0
        stopping = asyncio.create_task(set_on(stop, wakeup))
        try:
            while not stop.is_set():
                # Cleared before looking, so a wakeup during the batch is not lost.
                wakeup.clear()
                try:
                    consumed = await self._applying()
                except Exception:
                    failures += 1
                    delay = min(poll_interval * 2**failures, _MAX_BACKOFF)
                    log.exception("projection.failed", failures=failures, retry_in=delay)
                    await first_of(stop, within=delay)
                    continue
                if failures:
                    log.info("projection.recovered", failures=failures)
                    failures = 0
                if consumed:
                    self.progress.notify(self._applied)
                if consumed < self._batch_size:  # the log held no more: until a commit
                    # The wake-up alone (`stopping` sets it on `stop`): see `set_on`.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll_interval):
                            await wakeup.wait()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping


# Marks of view layouts that are not migrated (docs/decisions.md): a store that has one was
# made by an older Tenantry, and its newer tables would be empty past events already applied,
# or read wrongly. A table, or (table, column).
OLD_LAYOUTS: tuple[str | tuple[str, str], ...] = (
    "view_access_intervals",  # the temporal view before issue 17
    # before the members' ended rows were derived, not stored (issue 17, scale)
    ("view_audit_events", "prev_hash"),
)
# Columns a store made by an older Tenantry lacks (the same refusal): (table, column).
NEW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("view_access_open", "expires_at"),  # the grants' deadlines (issue 15)
)


def refuse_old_layout(store: ViewStore) -> None:
    """Raise if `store` was made with an older layout of the views: it must be rebuilt."""
    with store.snapshot() as conn:
        schema_name = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        inspector = inspect(conn)
        found = []
        for mark in OLD_LAYOUTS:
            table, column = (mark, None) if isinstance(mark, str) else mark
            if not inspector.has_table(table, schema_name):
                continue
            if column is None or column in {
                c["name"] for c in inspector.get_columns(table, schema_name)
            }:
                found.append(table if column is None else f"{table}.{column}")
        for table, column in NEW_COLUMNS:
            if inspector.has_table(table, schema_name) and column not in {
                c["name"] for c in inspector.get_columns(table, schema_name)
            }:
                found.append(f"{table} without {column}")
    if found:
        raise RuntimeError(
            f"the view store has {', '.join(found)}, of an older layout of the views, which is "
            "not migrated: run `tenantry rebuild-views`, or delete it (views.sqlite, or the "
            "views' PostgreSQL tables) and the views are rebuilt from the event log"
        )


def rebuild(
    recorder: NotificationLog, new_store: ViewStore, *, batch_size: int = 2_000
) -> ProjectionRunner:
    """Build every view from position zero into `new_store`, which must be empty (a store
    beside the live one: swap it in when this returns); return its runner, caught up, to keep
    it going. The indexes only queries read are built once, at the end."""
    new_store.create_tables(history_indexes=False)
    tracking = new_store.tracking()
    if tracking.position != 0:
        raise ValueError(
            f"rebuild needs an empty view store; this one is at position {tracking.position}"
        )
    new_store.drop_history_indexes()  # (tables made before, by a rebuild cut short)
    runner = ProjectionRunner(recorder, new_store, batch_size=batch_size)
    with fewer_collections():
        consumed = runner.catch_up()
    new_store.create_history_indexes()
    log.info("projection.rebuilt", notifications=consumed, position=runner.position())
    return runner


# The youngest generation's threshold while a rebuild runs: a collection every this many
# container objects allocated (not freed), instead of 700 (docs/decisions.md, session 7).
REBUILD_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Fewer runs of the cyclic garbage collector while a rebuild runs; as before after it.

    A batch allocates a few dozen containers an event (bodies, rows, parameters) that live until
    the batch is written and are freed by their counts, not by the collector. With the default
    thresholds the collector ran ~330 times in a full-size rebuild (25,444 events), three of
    them over every object of the process (~90 ms each, the batches' survivors pushing the
    oldest generation over its limit): about a quarter of the rebuild's CPU. Here the objects
    the process held before the rebuild are set aside (`gc.freeze`, until `gc.unfreeze` at the
    end; unless the process froze some itself) and the youngest generation is collected every
    `REBUILD_GC_THRESHOLD` allocations. The cycles a rebuild makes, if any, are still
    collected, a little later. Process-wide, as the collector is: a rebuild runs in a process
    of its own (`tenantry rebuild-views`), and the thresholds are back once it returns."""
    with _COLLECTIONS_LOCK:
        _collections_held.append(None)
        if len(_collections_held) == 1:  # the first rebuild running: settings saved
            _collections_saved[:] = [gc.get_threshold(), gc.get_freeze_count() == 0]
            if _collections_saved[1]:
                gc.freeze()
            before = _collections_saved[0]
            gc.set_threshold(max(before[0], REBUILD_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        with _COLLECTIONS_LOCK:
            _collections_held.pop()
            if not _collections_held:  # the last rebuild running: settings restored
                gc.set_threshold(*_collections_saved[0])
                if _collections_saved[1]:
                    gc.unfreeze()


# The rebuilds running in this process (two at once: the last to end restores the collector's
# settings the first found), and those settings: thresholds, whether it froze the objects.
_COLLECTIONS_LOCK = threading.Lock()
_collections_held: list[None] = []
_collections_saved: list[Any] = []
