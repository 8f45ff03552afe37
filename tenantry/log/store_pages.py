"""The store's notifications read a page at a time for the relay, as plain rows.

eventsourcing's `select_notifications` makes a `UUID` of every row's originator id (SQLite keeps
it as text) and a dict of every PostgreSQL row: about a third of the relay's cost per event, on
rows half of which (the command records) it skips. These readers run the same query through the
recorder's own datastore (so its connections, transactions and `PersistenceError`s are the ones
it always had) and hand the id on as the text the store holds; `unchained_body` takes either.
They answer only what `read_batch` asks: the rows after a position, in order, up to a limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from domain.event_log import NotificationLog


def page_reader(recorder: NotificationLog) -> NotificationLog:
    """A reader of `recorder`'s pages as plain rows where its store is one of ours, else itself."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _SQLitePages(recorder)
    if isinstance(recorder, PostgresApplicationRecorder):
        return _PostgresPages(recorder)
    return recorder


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


class _Pages:
    def __init__(self, recorder: NotificationLog) -> None:
        self._recorder = recorder

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

    def max_notification_id(self) -> int | None:
        return self._recorder.max_notification_id()

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
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

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute(self._statement, (after, limit))
            return list(cursor.fetchall())


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

    def _rows(self, after: int, limit: int) -> Sequence[Sequence[Any]]:
        with (
            self._datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self._statement, (after, limit), prepare=True)
            return cursor.fetchall()
