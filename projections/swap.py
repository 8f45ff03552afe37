"""Rebuilding the views beside the live ones, then swapping them in at once.

`rebuild_beside` builds every view from position zero into a fresh store next to the live one
(`views.sqlite.rebuild` beside `views.sqlite`; on PostgreSQL, a schema `<name>_rebuild` beside
the schema `<name>` the views share with the event store) while the live views keep answering
and their runner keeps applying, catches it up to the log's head, then swaps it in within one
transaction, so a reader sees either the old views whole or the new ones whole, never a
half-built store:

- SQLite: the fresh file is copied into the live one by SQLite's backup API, which writes the
  live file in one write transaction (readers in WAL mode keep their snapshot until it commits,
  the live runner waits for the lock). A rename of the file would be quicker but is not safe
  while another connection has the file open: its `-wal` and `-shm` files would then belong to
  a different database.
- PostgreSQL: in one transaction, every live view table is locked and dropped, the fresh
  tables are moved into the live schema (`ALTER TABLE … SET SCHEMA`, their indexes with them)
  and the fresh schema is dropped. The schema itself can't be renamed: the event store's tables
  share it. A statement waiting on a lock looks its table's name up again once it has the
  lock, so it reads the new table. Tables of an older layout of the views
  (`runner.OLD_LAYOUTS`) are dropped with the live ones: a rebuild is how a store is upgraded.

The live store's tracking row moves with its tables: the live runner then goes on from the
fresh store's position (the events it applied meanwhile to the old store are applied again to
the new one, once)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url

from domain.event_log import NotificationLog
from projections import schema
from projections.runner import OLD_LAYOUTS, rebuild
from projections.store import ViewStore

log = structlog.get_logger("tenantry.projections")
_SUFFIX = "_rebuild"


def beside_url(url: str) -> str:
    """The URL of the fresh store a rebuild of the store at `url` builds into."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///{_sqlite_path(url)}.rebuild"
    name = _schema_of(url)
    query = dict(parsed.query)
    query["schema"] = name + _SUFFIX
    return parsed.set(query=query).render_as_string(hide_password=False)


def rebuild_beside(recorder: NotificationLog, url: str, *, batch_size: int = 2_000) -> int:
    """Rebuild every view of the store at `url` into a fresh store beside it and swap that in;
    the position the swapped-in views stand at. The live store is created if missing."""
    fresh_url = beside_url(url)  # (raises first if `url` can't have one)
    live = ViewStore.from_url(url)
    live.create_tables()
    _drop(fresh_url)  # a rebuild cut short leaves one: start again
    fresh = ViewStore.from_url(fresh_url, scratch=True)  # swapped in only if built whole
    try:
        runner = rebuild(recorder, fresh, batch_size=batch_size)
        runner.catch_up()  # what was logged while it built
        position = runner.position()
    finally:
        fresh.close()
    try:
        if live.dialect == "sqlite":
            _swap_sqlite(_sqlite_path(fresh_url), _sqlite_path(url))
        else:
            _swap_postgres(live, _schema_of(url))
    finally:
        live.close()
    _drop(fresh_url)
    log.info("projection.swapped", position=position)
    return position


def _swap_sqlite(fresh: Path, live: Path) -> None:
    source = sqlite3.connect(fresh)
    target = sqlite3.connect(live, timeout=30)
    try:
        source.backup(target)  # one write transaction on the live file
    finally:
        target.close()
        source.close()


def _swap_postgres(live: ViewStore, name: str) -> None:
    fresh = name + _SUFFIX
    # The tracking table first: the runner's batches and every query read it first, so once
    # it is held nobody holds another view table, and nobody waits for it holding one (no
    # deadlock with a reader or the runner).
    tracking = schema.tracking.name
    names = [tracking] + [t.name for t in schema.metadata.sorted_tables if t.name != tracking]
    with live.unscoped() as conn:
        tables = ", ".join(f'"{name}"."{table}"' for table in names)
        # Waits for the live runner's batch and the readers in progress; holds the next ones.
        conn.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        conn.execute(text(f"DROP TABLE {tables}"))
        for old in (mark for mark in OLD_LAYOUTS if isinstance(mark, str)):
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"."{old}"'))
        for table in names:
            conn.execute(text(f'ALTER TABLE "{fresh}"."{table}" SET SCHEMA "{name}"'))
        conn.execute(text(f'DROP SCHEMA "{fresh}" CASCADE'))


def _drop(url: str) -> None:
    """Remove the store at `url` (a fresh store beside the live one), if there is one."""
    if make_url(url).get_backend_name() == "sqlite":
        path = _sqlite_path(url)
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        return
    store = ViewStore.from_url(url)
    try:
        with store.unscoped() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{_schema_of(url)}" CASCADE'))
    finally:
        store.close()


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("the SQLite view store needs a file: sqlite:///path/views.sqlite")
    return Path(database)


def _schema_of(url: str) -> str:
    """The views' PostgreSQL schema: the one named in `url`, else `public`."""
    name = make_url(url).query.get("schema")
    if isinstance(name, tuple):
        name = name[-1] if name else None
    name = name or "public"
    if not name.replace("_", "").isalnum() or len(name) + len(_SUFFIX) > 63:
        raise ValueError(f"the views' schema name {name!r} is not one a rebuild can use")
    return name
