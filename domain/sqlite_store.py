"""eventsourcing's SQLite recorder, reading one aggregate's events on connections of its own.

Nearly every command reads the aggregates it is about (a new team's name is looked up first), one
`select_events` each. eventsourcing runs each as a transaction from its connection pool: taking
the pool's lock, `BEGIN`, the `SELECT`, `ROLLBACK`, handing the connection back — most of a
read's cost is that bookkeeping, not SQLite's. A lone `SELECT` in autocommit mode is already a
transaction of its own in SQLite (it reads one snapshot), and in WAL mode readers and the writer
don't wait for each other: so this recorder reads one aggregate on a connection it keeps for
reading, with nothing else around the statement. Everything else (writes, notifications,
tracking) is eventsourcing's, on its pool. An in-memory database is one per connection, so
there it reads through the pool as before.

`TenancyService` selects it (eventsourcing's `APPLICATION_RECORDER_TOPIC`) on
`PERSISTENCE_MODULE=eventsourcing.sqlite`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

# sqlite3's errors as eventsourcing's (what its transactions raise), most specific first.
_ERRORS: tuple[tuple[type[sqlite3.Error], type[PersistenceError]], ...] = (
    (sqlite3.InterfaceError, InterfaceError),
    (sqlite3.DataError, DataError),
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.IntegrityError, IntegrityError),
    (sqlite3.InternalError, InternalError),
    (sqlite3.ProgrammingError, ProgrammingError),
    (sqlite3.NotSupportedError, NotSupportedError),
    (sqlite3.DatabaseError, DatabaseError),
    (sqlite3.Error, PersistenceError),
)

# How long a reader waits on a lock (seconds), when the store sets none: eventsourcing's default.
_DEFAULT_LOCK_TIMEOUT = 5


class SQLiteRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        pool = datastore.pool
        self._db_name: str | None = None if pool.is_sqlite_memory_mode else pool.db_name
        self._lock_timeout = pool.lock_timeout or _DEFAULT_LOCK_TIMEOUT
        self._uuid_ids = datastore.originator_id_type == "uuid"
        # Connections not in use (list.pop and list.append are atomic: no lock), and every
        # connection made, to close them.
        self._idle: list[sqlite3.Connection] = []
        self._made: list[sqlite3.Connection] = []
        self._closed = False

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        if self._db_name is None or self._closed:
            return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        # The statement and parameters eventsourcing's recorder uses (its table's index).
        statement = (
            f"SELECT originator_version, topic, state FROM {self.events_table_name} "  # noqa: S608 (our own name)
            "WHERE originator_id=? "
        )
        params: list[Any] = [
            originator_id.hex if isinstance(originator_id, UUID) else originator_id
        ]
        if gt is not None:
            statement += "AND originator_version>? "
            params.append(gt)
        if lte is not None:
            statement += "AND originator_version<=? "
            params.append(lte)
        statement += f"ORDER BY originator_version {'DESC' if desc else 'ASC'} "
        if limit is not None:
            statement += "LIMIT ? "
            params.append(limit)
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connect()
        try:
            rows = connection.execute(statement, params).fetchall()
        except sqlite3.Error as exc:
            for raw, ours in _ERRORS:
                if isinstance(exc, raw):
                    raise ours(exc) from exc
            raise  # pragma: no cover (every sqlite3.Error is one of them)
        finally:
            self._idle.append(connection)
        if not rows:
            return []
        # Every row is of the aggregate asked for: its id as the store's recorder gives it.
        the_id: UUID | str = (
            originator_id
            if isinstance(originator_id, UUID) and self._uuid_ids
            else self.convert_originator_id(params[0])
        )
        return [
            StoredEvent(originator_id=the_id, originator_version=row[0], topic=row[1], state=row[2])
            for row in rows
        ]

    def _connect(self) -> sqlite3.Connection:
        assert self._db_name is not None
        try:
            connection = sqlite3.connect(
                self._db_name,
                uri=True,
                check_same_thread=False,  # one thread at a time: taken from `_idle`
                isolation_level=None,  # autocommit: each SELECT is its own read transaction
                timeout=self._lock_timeout,
            )
        except (sqlite3.Error, TypeError) as exc:
            raise InterfaceError(exc) from exc
        self._made.append(connection)
        return connection

    def close_readers(self) -> None:
        """Close the connections made for reading (the pool's are closed with the datastore);
        reads after this go through the pool."""
        self._closed = True
        self._idle.clear()
        for connection in self._made:
            connection.close()
        self._made.clear()
