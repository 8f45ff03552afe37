"""The store's notifications read a page at a time for the relay, as plain rows.

eventsourcing's `select_notifications` makes a `UUID` of every row's originator id (SQLite keeps
it as text) and a dict of every PostgreSQL row: about a third of the relay's cost per event, on
rows half of which (the command records) it skips. These readers run the same query through the
recorder's own datastore (so its connections, transactions and `PersistenceError`s are the ones
it always had) and hand the id on as the text the store holds; `unchained_body` takes either.
They answer only what `read_batch` asks: the rows after a position, in order, up to a limit.

`read_page` is the relay's own read (`read_batch` of a page, same result): the store sends only
the published rows of the page and, in the same statement, where the page ends and how many
rows it held. The command records (about half the rows, ~470 bytes of state each) are never
sent to the relay nor made into objects only to be skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from domain.event_log import (
    INTERNAL_TOPICS,
    Batch,
    NotificationLog,
    Published,
    published_body,
    read_batch,
    unchained_row,
)

# PostgreSQL's page in one statement (one snapshot): the published rows of the page, read by
# the index between its two ends, then one row of its last position and number of rows
# (`topic` NULL: the last row once sorted).
_PAGE = (
    "WITH page AS (SELECT notification_id AS id FROM {events} "
    "WHERE notification_id>%(after)s ORDER BY notification_id LIMIT %(limit)s), "
    "bounds AS (SELECT max(id) AS last, count(*) AS read FROM page) "
    "SELECT * FROM ("
    " SELECT notification_id, originator_id::text, originator_version, topic, state"
    " FROM {events} WHERE notification_id>%(after)s"
    " AND notification_id<=(SELECT last FROM bounds) AND topic NOT IN ({internal})"
    " UNION ALL SELECT last, NULL, read, NULL, NULL FROM bounds"
    ") paged ORDER BY topic IS NULL, 1"
)
_INTERNAL = sorted(INTERNAL_TOPICS)
_INTERNAL_PARAMS = {f"internal{n}": topic for n, topic in enumerate(_INTERNAL)}


def page_reader(recorder: NotificationLog) -> PageReader:
    """A reader of `recorder`'s pages as plain rows where its store is one of ours, else one
    that asks the recorder."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _SQLitePages(recorder)
    if isinstance(recorder, PostgresApplicationRecorder):
        return _PostgresPages(recorder)
    return PageReader(recorder)


_new = object.__new__


def _notification(row: Sequence[Any]) -> Notification:
    """`Notification(id=…, originator_id=…, …)` of a row, made without the frozen dataclass's
    `__init__`, which sets each field through `object.__setattr__`: ~1.5 µs a row against ~0.3
    here, for every row a rebuild or the relay reads. Equal to the one `__init__` makes (its
    fields are its `__dict__`; tests/integration/test_store_pages.py)."""
    notification = _new(Notification)
    fields = notification.__dict__
    fields["id"] = row[0]
    fields["originator_id"] = row[1]
    fields["originator_version"] = row[2]
    fields["topic"] = row[3]
    fields["state"] = bytes(row[4])
    return notification


class PageReader:
    """The relay's reader of the store (any recorder: `read_batch` through it)."""

    def __init__(self, recorder: NotificationLog) -> None:
        self._recorder = recorder

    def read_page(self, after: int, prev_hash: str, limit: int) -> Batch:
        """`read_batch(recorder, after, prev_hash, limit)`."""
        return read_batch(self._recorder, after, prev_hash, limit)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        return self._recorder.select_notifications(
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )

    def max_notification_id(self) -> int | None:
        return self._recorder.max_notification_id()


class _Pages(PageReader):
    def read_page(self, after: int, prev_hash: str, limit: int) -> Batch:
        rows, last, read = self._page(after, limit)
        events: list[Published] = []
        for position, originator_id, version, topic, state in rows:
            event = published_body(
                unchained_row(position, originator_id, version, topic, bytes(state)), prev_hash
            )
            events.append(event)
            prev_hash = event.body["hash"]
        return Batch(events, after if last is None else last, prev_hash, read)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        if stop is not None or topics:
            # Not a page after a position: what the recorder itself answers.
            return self._recorder.select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
        after = (start or 0) - (1 if inclusive_of_start else 0)
        return [_notification(row) for row in self._rows(after, limit)]

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def _page(self, after: int, limit: int) -> tuple[Sequence[Sequence[Any]], int | None, int]:
        """The page's published rows, its last position (None if empty) and its row count."""
        raise NotImplementedError


class _SQLitePages(_Pages):
    def __init__(self, recorder: SQLiteApplicationRecorder) -> None:
        super().__init__(recorder)
        self._datastore = recorder.datastore
        table = recorder.events_table_name
        self._statement = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "  # noqa: S608 (our own name)
            "WHERE rowid>? ORDER BY rowid LIMIT ?"
        )
        # The page's end and size, then its published rows: two statements of one read
        # transaction (one snapshot), neither sorting (rowid order is the table's).
        self._window = (
            f"SELECT max(rowid), count(*) FROM (SELECT rowid FROM {table} "  # noqa: S608 (our own name)
            "WHERE rowid>? ORDER BY rowid LIMIT ?)"
        )
        self._published = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "  # noqa: S608 (our own name)
            f"WHERE rowid>? AND rowid<=? AND topic NOT IN ({', '.join('?' * len(_INTERNAL))}) "
            "ORDER BY rowid"
        )

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute(self._statement, (after, limit))
            return list(cursor.fetchall())

    def _page(self, after: int, limit: int) -> tuple[Sequence[Sequence[Any]], int | None, int]:
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute(self._window, (after, limit))
            last, read = cursor.fetchone()
            if not read:
                return [], None, 0
            cursor.execute(self._published, (after, last, *_INTERNAL))
            return cursor.fetchall(), last, read


class _PostgresPages(_Pages):
    def __init__(self, recorder: PostgresApplicationRecorder) -> None:
        super().__init__(recorder)
        self._datastore = recorder.datastore
        self._statement = SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {schema}.{table} WHERE notification_id>%s ORDER BY notification_id LIMIT %s"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        events = SQL("{schema}.{table}").format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        self._page_statement = SQL(
            _PAGE.format(
                events="{events}",
                internal=", ".join(f"%(internal{n})s" for n in range(len(_INTERNAL))),
            )
        ).format(events=events)

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
        with (
            self._datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self._statement, (after, limit), prepare=True)
            return cursor.fetchall()

    def _page(self, after: int, limit: int) -> tuple[Sequence[Sequence[Any]], int | None, int]:
        with (
            self._datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(
                self._page_statement,
                {"after": after, "limit": limit, **_INTERNAL_PARAMS},
                prepare=True,
            )
            rows = cursor.fetchall()
        last, _, read, _, _ = rows.pop()
        return rows, last, read
