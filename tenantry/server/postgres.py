"""The PostgreSQL event store (eventsourcing's), made to fail at once while its database can't be
reached and to work again as soon as the database answers.

As the library builds it, a statement against a stopped database is tried 10 times, each try
waiting for the pool's timeout: a command hung for ~50 s, far past any client's patience, and
the pool's reconnection backoff (doubling, for up to 5 minutes) kept commands failing for a
minute after the database was back. Here a connection failure marks the store down; while it is
down every use first tries one fresh connection (refused at once, or `connect_timeout`) and,
if that fails too, raises `DatabaseUnavailable` without the library's retries; once that
connection works, the pool's stale connections are replaced at once; and the pool gives up its
background reconnections after a second, so that connections are made again on demand.

`PERSISTENCE_MODULE=tenantry.server.postgres` selects it (see `tenantry.server.store.postgres_env`,
which also turns the pool's check of every connection before use off: a stale connection fails its
statement, which marks the store down, and the library's retry finds the pool renewed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing import postgres as _postgres
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from eventsourcing.utils import Environment
from psycopg import Connection
from psycopg.rows import DictRow

# How long the pool keeps reconnecting in the background after a connection failed.
RECONNECT_WINDOW = 1.0


class DatabaseUnavailable(PersistenceError):
    """The event store's database can't be reached now. Not retried: we have just looked."""


class Factory(_postgres.PostgresFactory):
    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        datastore = self.datastore
        datastore.__class__ = FailFastDatastore
        assert isinstance(datastore, FailFastDatastore)
        datastore.fail_fast()


class FailFastDatastore(_postgres.PostgresDatastore):
    """eventsourcing's datastore that knows when its database is down (see the module)."""

    _down: bool
    _probe_lock: threading.Lock

    def fail_fast(self) -> None:
        self._down = False
        self._probe_lock = threading.Lock()
        self.pool.reconnect_timeout = RECONNECT_WINDOW

    @contextmanager
    def get_connection(self) -> Iterator[Connection[DictRow]]:
        if self._down:
            self._look()
        try:
            with super().get_connection() as conn:
                yield conn
        except (OperationalError, InterfaceError):
            # Maybe a lost connection, maybe a serialisation failure: the next use looks first
            # (a fresh connection: milliseconds when the database is up).
            self._down = True
            raise

    def _look(self) -> None:
        """Connect once, directly: back to the pool if that works, DatabaseUnavailable if not."""
        with self._probe_lock:
            if not self._down:
                return  # another thread just looked
            raw = self.pool.kwargs
            kwargs: dict[str, Any] = dict((raw() if callable(raw) else raw) or {})
            kwargs.pop("row_factory", None)
            if self.pool.get_password_func is not None:
                kwargs["password"] = self.pool.get_password_func()
            try:
                psycopg.connect(**kwargs, connect_timeout=max(1, round(self.pool.timeout))).close()
            except psycopg.Error as exc:
                # The message names no host or credentials; the cause (chained) has the detail.
                raise DatabaseUnavailable("the event store's database can't be reached") from exc
            # The pooled connections are from before the outage: checking them one by one
            # (the pool backs off between failed checks) would outlast its timeout.
            self.pool.drain()
            self._down = False
