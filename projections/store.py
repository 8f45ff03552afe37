"""The view store: the read models' database (a SQLite file, or PostgreSQL) and its tracking row.

Writes happen in one transaction per batch of events that also moves the tracking row, with the
row locked for the whole transaction (`SELECT … FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on
SQLite), so two runners on one store can't both apply the same events. Reads see one snapshot,
tracking row included, so an answer's `position` is the one its data was read at."""

from __future__ import annotations

import functools
import operator
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable, DropIndex
from sqlalchemy.sql.expression import Executable, Insert

from domain.clock import Clock, system_clock
from domain.event_log import ZERO_HASH
from projections import schema

_TRACKING_NAME = "views"
# The tracking table's second row: the last published event the views applied, its position
# and chain hash (the first row's position may be an internal record's, after it). Compared
# with the stream's message for that position (`tenantry.log.agreement`).
_LAST_EVENT_NAME = "views.last_event"
_WRITE = "tenantry_write"


@dataclass(frozen=True)
class Tracking:
    """Where the views stand: the last position applied and the chain hash after it."""

    position: int = 0
    hash: str = ZERO_HASH


class ViewStore:
    def __init__(self, engine: Engine, schema_name: str | None = None) -> None:
        self._schema = schema_name
        self._tables_created = False
        # A scratch SQLite store (`from_url(scratch=True)`): its tables, if it has none, are
        # copied from an empty store made once per process (`create_tables`).
        self._copy_tables = False
        # "Now" for the questions asked of this store (today's access compares the grants'
        # deadlines with it): the system clock unless a test gives a controlled one.
        self.clock: Clock = system_clock
        self._base_engine = engine
        self.engine = (
            engine.execution_options(schema_translate_map={None: schema_name})
            if schema_name
            else engine
        )

    @classmethod
    def from_url(cls, url: str, *, scratch: bool = False) -> ViewStore:
        """`sqlite:///path/views.sqlite`, or `postgresql://user:pw@host:port/db?schema=name`
        (the form of TENANTRY_DATABASE_URL; `connect_timeout`, `pool_size` and `max_overflow`
        are honoured too). Nothing is opened until the store is used.

        `scratch` (SQLite): a store that is thrown away unless it is filled whole, as a rebuild
        beside the live views is (`projections.swap`, which copies it into the live file): no
        journal and no fsync, so its pages are written once (not to the WAL, then the file).
        A crash or a failed batch leaves it unusable, and it is not used again."""
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            store = cls(_sqlite_engine(parsed.database, scratch=scratch))
            store._copy_tables = scratch
            return store
        if backend in ("postgres", "postgresql"):
            query = dict(parsed.query)
            schema_name = _single(query.pop("schema", None))
            pool_size = int(_single(query.pop("pool_size", None)) or 5)
            max_overflow = int(_single(query.pop("max_overflow", None)) or 10)
            query.setdefault("connect_timeout", "5")
            engine = create_engine(
                parsed.set(drivername="postgresql+psycopg", query=query),
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
            )
            return cls(engine, schema_name)
        raise ValueError(f"a view store URL is sqlite:///… or postgresql://…, not {backend}://")

    @classmethod
    def in_memory(cls) -> ViewStore:
        """A private SQLite database in memory, every view's table in it and empty, gone when
        closed: a scratch store for replays and tests (one thread at a time). It is copied
        from an empty one made once per process, much quicker than creating the tables."""
        database = sqlite3.connect(":memory:", check_same_thread=False)
        _copy_empty_views(database)
        engine = create_engine("sqlite+pysqlite://", creator=lambda: database, poolclass=StaticPool)
        _take_over_transactions(engine)
        store = cls(engine)
        store._tables_created = True
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_tables(self, *, history_indexes: bool = True) -> None:
        """Create the schema (if one is named), the tables and the tracking row, if missing.

        `history_indexes=False` (a rebuild, which builds them at its end): the tables it creates
        are made without the indexes only queries read (`schema.HISTORY_INDEXES`)."""
        if self._tables_created:
            return
        if self._copy_tables and self._copied_empty_views(history_indexes=history_indexes):
            self._tables_created = True
            return
        with self._base_engine.begin() as conn:
            if self._schema:
                conn.execute(CreateSchema(self._schema, if_not_exists=True))
        later = {str(index.name) for index in schema.HISTORY_INDEXES}
        with self.write() as conn:
            # One look at what exists, not one per table and index: a rebuild's fixed cost.
            present = set(inspect(conn).get_table_names(schema=self._schema))
            for table in schema.metadata.sorted_tables:
                if table.name in present:
                    continue
                conn.execute(CreateTable(table))
                for index in sorted(table.indexes, key=lambda index: str(index.name)):
                    if history_indexes or str(index.name) not in later:
                        conn.execute(CreateIndex(index))
            if history_indexes:
                # (A rebuild cut short leaves its store without them.)
                for index in schema.HISTORY_INDEXES:
                    if index.table is not None and index.table.name in present:
                        index.create(conn, checkfirst=True)
            insert = _insert_for(conn)(schema.tracking).values(
                name=_TRACKING_NAME, position=0, hash=ZERO_HASH
            )
            conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        self._tables_created = True

    def _copied_empty_views(self, *, history_indexes: bool) -> bool:
        """Copy every table (and the tracking row) from an empty store made once per process
        into this SQLite database if it has no table yet (True), with SQLite's backup: much
        quicker than the DDL statements, a rebuild's fixed cost (docs/benchmarks.md, session
        6). False if it has tables: `create_tables` adds what is missing."""
        with self.engine.connect() as conn:
            # On the driver's connection, outside a transaction, as the backup needs.
            database: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
            if database.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return False
            _copy_empty_views(database, history_indexes=history_indexes)
        return True

    def drop_history_indexes(self) -> None:
        """Drop the indexes only queries read (`schema.HISTORY_INDEXES`): for a rebuild."""
        with self.write() as conn:
            present = self._history_indexes_present(conn)
            for index in schema.HISTORY_INDEXES:
                if index.name in present:
                    conn.execute(DropIndex(index))

    def create_history_indexes(self) -> None:
        with self.write() as conn:
            present = self._history_indexes_present(conn)
            for index in schema.HISTORY_INDEXES:
                if index.name not in present:
                    conn.execute(CreateIndex(index))

    def _history_indexes_present(self, conn: Connection) -> set[str]:
        """Which of `schema.HISTORY_INDEXES` exist: one look at the catalog (the reflection
        of each table's indexes cost a rebuild several milliseconds)."""
        if conn.dialect.name == "sqlite":
            found = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            found = conn.execute(
                text(
                    "SELECT indexname FROM pg_indexes"
                    " WHERE schemaname = coalesce(:schema, current_schema())"
                ),
                {"schema": self._schema},
            )
        wanted = {str(index.name) for index in schema.HISTORY_INDEXES}
        return {str(name) for (name,) in found} & wanted

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed if the block ends normally, else rolled back."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def unscoped(self) -> Iterator[Connection]:
        """One transaction on the database itself, names not put in the store's schema (to
        create, move or drop schemas and tables: `projections.swap`)."""
        with self._base_engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read-only transaction that sees a single consistent state of every view."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            conn.info["tenantry_clock"] = self.clock
            with conn.begin():
                yield conn

    def tracking(self) -> Tracking:
        with self.snapshot() as conn:
            return read_tracking(conn)

    def position(self) -> int:
        """The last position the views have applied (0 before the first event)."""
        return self.tracking().position

    def close(self) -> None:
        self._base_engine.dispose()


def read_tracking(conn: Connection, *, lock: bool = False) -> Tracking:
    """The tracking row; `lock` holds it until the transaction ends (PostgreSQL)."""
    rows = (_READ_TRACKING_LOCKED if lock else _READ_TRACKING).run(conn, {})
    if not rows:
        raise RuntimeError("the view store has no tracking row: call create_tables() first")
    position, chain_hash = rows[0]
    return Tracking(int(position), str(chain_hash))


def write_tracking(conn: Connection, before: Tracking, after: Tracking) -> None:
    """Move the tracking row from `before` to `after`; refuse if someone else moved it."""
    moved = _WRITE_TRACKING.count(
        conn, {"before": before.position, "position": after.position, "hash": after.hash}
    )
    if moved != 1:
        raise RuntimeError(
            f"the views' tracking position moved from {before.position} under this transaction"
        )


def write_last_event(conn: Connection, position: int, chain_hash: str) -> None:
    """Record the last published event applied and its chain hash (in the batch's transaction)."""
    upsert(
        conn, schema.tracking, {"name": _LAST_EVENT_NAME, "position": position, "hash": chain_hash}
    )


def read_last_event(conn: Connection) -> Tracking | None:
    """The last published event the views applied (position, chain hash); None before any."""
    statement = select(schema.tracking.c.position, schema.tracking.c.hash).where(
        schema.tracking.c.name == _LAST_EVENT_NAME
    )
    row = conn.execute(statement).one_or_none()
    return None if row is None else Tracking(int(row.position), str(row.hash))


def upsert(conn: Connection, table: Table, values: Mapping[str, Any]) -> None:
    """Insert a row, or overwrite the row with the same primary key."""
    _upsert_statement(conn.dialect.name, table, tuple(values)).run(conn, values)


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...]) -> Raw:
    # Built once per table and columns, values bound at execution: building a statement
    # with its values each time costs several times more than running it; run raw, at that.
    keys = [column.name for column in table.primary_key.columns]
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    rest = {name: insert.excluded[name] for name in columns if name not in keys}
    if rest:
        statement = insert.on_conflict_do_update(index_elements=keys, set_=rest)
    else:
        statement = insert.on_conflict_do_nothing(index_elements=keys)
    return Raw(statement, columns)


class Raw:
    """A statement run on the driver's own cursor, compiled once per dialect and schema.

    `Connection.execute` costs about 60 µs a statement in SQLAlchemy's own code, the driver
    5 µs for the small statements the views run for each event: the hot ones go this way.
    Values go through their column type's bind processor, as SQLAlchemy would pass them (JSON
    encoded, booleans as the dialect wants); `keys` are the columns an INSERT or UPDATE sets.
    Rows come back as the driver gives them: select text and integers only."""

    def __init__(self, statement: Executable, keys: Sequence[str] = ()) -> None:
        self._statement = statement
        self._keys = list(keys)
        self._compiled: dict[tuple[str, Any], _Compiled] = {}
        # The table an INSERT, UPDATE or DELETE writes (`Writes` keeps each table's order).
        written = getattr(statement, "table", None)
        self.table: str | None = written.name if isinstance(written, Table) else None

    def _sql(self, conn: Connection) -> _Compiled:
        translate = conn.get_execution_options().get("schema_translate_map")
        key = (conn.dialect.name, frozenset(translate.items()) if translate else None)
        found = self._compiled.get(key)
        if found is None:
            # psycopg takes %(name)s parameters and a dict; SQLite's driver `?` and a tuple,
            # in their order: bound quicker than a dict's names (a lookup by a name made anew
            # for each parameter of each row, ~0.13 µs each; 15 a row of the temporal view).
            dialect = sqlite.dialect(paramstyle="qmark") if key[0] == "sqlite" else conn.dialect
            compiled = self._statement.compile(  # type: ignore[attr-defined]
                dialect=dialect,
                column_keys=self._keys or None,
                schema_translate_map=translate,
                render_schema_translate=bool(translate),
            )
            defaults: dict[str, Any] = {}
            processors: dict[str, Callable[[Any], Any]] = {}
            for bind, name in compiled.bind_names.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors[name] = process
                if not bind.required:  # a literal of the statement, as `via == DIRECT`
                    defaults[name] = process(bind.value) if process else bind.value
            positions = getattr(compiled, "positiontup", None) if key[0] == "sqlite" else None
            found = self._compiled[key] = _Compiled(
                compiled.string,
                defaults,
                processors,
                _copy_of(self._statement, compiled.string),
                None if positions is None else _in_order(positions),
            )
        return found

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with `params`; the rows, if the statement returns any."""
        compiled = self._sql(conn)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.values(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def count(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute with `params`; how many rows it changed (an UPDATE or DELETE)."""
        compiled = self._sql(conn)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.values(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of `rows`, in one driver call."""
        if not rows:
            return
        compiled = self._sql(conn)
        cursor = conn.connection.cursor()
        try:
            if compiled.copy is None:
                if compiled.order is not None:  # (SQLite) tuples, in the `?`s' order
                    order = compiled.order
                    cursor.executemany(compiled.sql, [order(compiled.named(row)) for row in rows])
                else:
                    cursor.executemany(compiled.sql, [compiled.named(row) for row in rows])
                return
            # PostgreSQL, a plain INSERT: COPY, measured quicker than executemany (pipelined)
            # and than multi-row INSERTs for a rebuild (docs/benchmarks.md, session 5).
            command, names = compiled.copy
            with cursor.copy(command) as copy:
                for row in rows:
                    values = compiled.named(row)
                    copy.write_row([values[name] for name in names])
        finally:
            cursor.close()


@functools.lru_cache(maxsize=128)
def update_by_key(table: Table, key: str, columns: tuple[str, ...]) -> Raw:
    """UPDATE `table` SET `columns` WHERE `key` = :w_key, built once per set of columns."""
    return Raw(update(table).where(table.c[key] == bindparam("w_key")), columns)


class Writes:
    """A view's writes for one batch of events, held and run at the batch's end (`flush`):
    each table's statements in the order they were given, a run of one statement (the same
    upsert for a hundred workspaces) in one driver call, not one call per event.

    Only each table's own order is kept: no statement writes two tables, and no view's rows
    refer to another table's. A handler that reads a table flushes it first (`flush(table)`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._queues: dict[str, list[tuple[Raw, list[Mapping[str, Any]]]]] = {}

    def add(self, statement: Raw, params: Mapping[str, Any]) -> None:
        if statement.table is None:
            raise ValueError("only a statement that writes one table can be held")
        queue = self._queues.setdefault(statement.table, [])
        if queue and queue[-1][0] is statement:
            queue[-1][1].append(params)
        else:
            queue.append((statement, [params]))

    def upsert(self, table: Table, values: Mapping[str, Any]) -> None:
        """`upsert`, held."""
        self.add(_upsert_statement(self.conn.dialect.name, table, tuple(values)), values)

    def flush(self, table: Table | None = None) -> None:
        """Run what is held (for `table` only, if given)."""
        for name in [table.name] if table is not None else list(self._queues):
            for statement, rows in self._queues.pop(name, ()):
                statement.run_many(self.conn, rows)


_PARAMETER = re.compile(r"%\((\w+)\)s(?:::\w+(?:\(\d+\))?)?")


def _copy_of(statement: Executable, sql: str) -> tuple[str, list[str]] | None:
    """For a plain INSERT of one row on PostgreSQL (no ON CONFLICT, no RETURNING, no literals):
    the COPY command that loads the same columns, and the parameters in its column order."""
    if not isinstance(statement, Insert) or "%(" not in sql:
        return None
    into, _, values = sql.partition(" VALUES ")
    names = _PARAMETER.findall(values)  # each maybe cast (`::BIGINT`): COPY casts to the column
    if not into.startswith("INSERT INTO ") or _PARAMETER.sub("?", values) != (
        f"({', '.join('?' * len(names))})"
    ):
        return None
    return f"COPY {into.removeprefix('INSERT INTO ')} FROM STDIN", names


@dataclass(frozen=True)
class _Compiled:
    sql: str
    defaults: dict[str, Any]  # the statement's own literals
    processors: dict[str, Callable[[Any], Any]]  # by parameter, where its type has one
    copy: tuple[str, list[str]] | None = None  # (PostgreSQL) COPY command, its parameters
    # (SQLite) the values of a statement's `?`s, in order, from their names
    order: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None

    def values(self, params: Mapping[str, Any]) -> Mapping[str, Any] | tuple[Any, ...]:
        """What the driver takes for `params`: by name (psycopg), or in order (SQLite)."""
        named = self.named(params)
        return named if self.order is None else self.order(named)

    def named(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """The values by name: processed by their types, the statement's literals added."""
        if self.processors:
            # Only the values that have a processor (two of eight in an audit row), each in a
            # copy: not a new dict made value by value.
            params = dict(params)
            for name, process in self.processors.items():
                if name in params:
                    params[name] = process(params[name])
        return {**self.defaults, **params} if self.defaults else params


def _in_order(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of `names` of a mapping, as a tuple in that order."""
    if not names:
        return lambda _params: ()
    if len(names) == 1:
        name = names[0]
        return lambda params: (params[name],)
    return operator.itemgetter(*names)


# The tracking statements run once per batch applied (a commit of one event, once caught up):
# raw, like the views' hot statements.
_TRACKING_ROW = select(schema.tracking.c.position, schema.tracking.c.hash).where(
    schema.tracking.c.name == _TRACKING_NAME
)
_READ_TRACKING = Raw(_TRACKING_ROW)
_READ_TRACKING_LOCKED = Raw(_TRACKING_ROW.with_for_update())
_WRITE_TRACKING = Raw(
    update(schema.tracking)
    .where(
        schema.tracking.c.name == _TRACKING_NAME,
        schema.tracking.c.position == bindparam("before"),
    )
    .values(position=bindparam("position"), hash=bindparam("hash")),
    ("position", "hash"),
)


def _insert_for(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


_TEMPLATE_LOCK = threading.Lock()


def _copy_empty_views(database: sqlite3.Connection, *, history_indexes: bool = True) -> None:
    """Make `database` (SQLite, no transaction open) an empty store, every view's table in it
    (the indexes only queries read too, if `history_indexes`) and the tracking row."""
    with _TEMPLATE_LOCK:
        _empty_views(history_indexes).backup(database)


@functools.cache
def _empty_views(history_indexes: bool) -> sqlite3.Connection:
    """An in-memory database with every view's table, empty: what `_copy_empty_views` copies."""
    database = sqlite3.connect(":memory:", check_same_thread=False)
    engine = create_engine("sqlite+pysqlite://", creator=lambda: database, poolclass=StaticPool)
    _take_over_transactions(engine)
    ViewStore(engine).create_tables(history_indexes=history_indexes)
    return database


def _single(value: str | tuple[str, ...] | None) -> str | None:
    if isinstance(value, tuple):
        return value[-1] if value else None
    return value


def _sqlite_engine(database: str | None, *, scratch: bool = False) -> Engine:
    if not database or database == ":memory:":
        raise ValueError("the SQLite view store needs a file: sqlite:///path/views.sqlite")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite+pysqlite:///{database}",
        connect_args={"check_same_thread": False, "timeout": 30},
    )
    _take_over_transactions(engine, scratch=scratch)
    return engine


def _take_over_transactions(engine: Engine, *, scratch: bool = False) -> None:
    # pysqlite's own transaction handling begins late and never for reads; take it over so
    # that a write transaction holds the write lock from its first statement (BEGIN IMMEDIATE)
    # and a read sees one snapshot.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never wait for the writer, nor the writer for readers.
        if scratch:  # (see `ViewStore.from_url`)
            cursor.execute("PRAGMA journal_mode=OFF")
            cursor.execute("PRAGMA synchronous=OFF")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        # A rebuild writes big transactions over several indexes: a 32 MiB page cache (the
        # default is 2 MiB) keeps their pages from being spilled and read back.
        cursor.execute("PRAGMA cache_size=-32768")
        # and checkpoints every 10,000 pages (40 MiB of WAL), not 1,000: a checkpoint writes
        # each changed page once, however often it changed since the last one.
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        # On the driver's connection: SQLAlchemy's statement machinery would cost more than
        # the BEGIN itself, on every transaction (one per commit applied, once caught up).
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if immediate else "BEGIN"
        )
