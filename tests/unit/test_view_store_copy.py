"""A scratch SQLite view store (what a rebuild builds into) gets its tables by copying an empty
store made once per process, not by running the DDL (docs/benchmarks.md, session 6): it must be
the same database the DDL makes, and a store that already has tables must never be copied over."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from projections import schema
from projections.store import Tracking, ViewStore, read_tracking, write_tracking


def _catalog(store: ViewStore) -> list[tuple[str, str, str, str | None]]:
    with store.snapshot() as conn:
        rows = conn.execute(
            text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _tracking_rows(store: ViewStore) -> list[tuple[str, int, str]]:
    with store.snapshot() as conn:
        rows = conn.execute(select(schema.tracking).order_by(schema.tracking.c.name)).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("history_indexes", [True, False])
def test_a_copied_scratch_store_is_the_store_the_ddl_makes(
    tmp_path: Path, history_indexes: bool
) -> None:
    made = ViewStore.from_url(f"sqlite:///{tmp_path / 'ddl.sqlite'}")
    copied = ViewStore.from_url(f"sqlite:///{tmp_path / 'copied.sqlite'}", scratch=True)
    made.create_tables(history_indexes=history_indexes)
    copied.create_tables(history_indexes=history_indexes)
    assert _catalog(copied) == _catalog(made)
    names = {name for _, name, _, _ in _catalog(copied)}
    history = {str(index.name) for index in schema.HISTORY_INDEXES}
    assert history <= names if history_indexes else not history & names
    assert _tracking_rows(copied) == _tracking_rows(made) != []
    # and it is a file of its own, usable as any store (the tables, then the indexes, built).
    copied.create_history_indexes()
    made.create_history_indexes()
    assert _catalog(copied) == _catalog(made)
    made.close()
    copied.close()


def test_a_scratch_store_that_has_tables_is_not_copied_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'views.sqlite'}"
    first = ViewStore.from_url(url, scratch=True)
    first.create_tables(history_indexes=False)
    with first.write() as conn:  # a rebuild cut short moved it
        write_tracking(conn, read_tracking(conn), Tracking(15, "ab" * 32))
    first.close()
    again = ViewStore.from_url(url, scratch=True)
    again.create_tables(history_indexes=False)
    assert again.tracking() == Tracking(15, "ab" * 32)
    again.close()
