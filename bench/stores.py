"""The event stores a scenario runs on: SQLite files in a folder, or PostgreSQL in a fresh schema
that is dropped afterwards. Both sides of a scenario (product and raw baseline) use the same kind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from tenantry.settings import Settings

POSTGRES_URL = os.environ.get(
    "TENANTRY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

# `with store(folder) as settings:` the settings of an empty event store of that kind.
Store = Callable[[Path], AbstractContextManager[Settings]]


@contextmanager
def sqlite(folder: Path) -> Iterator[Settings]:
    yield Settings(state_dir=folder)


@contextmanager
def postgres(folder: Path) -> Iterator[Settings]:
    """Close every connection to the schema before leaving: it is dropped on the way out."""
    import psycopg
    from psycopg import sql

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        yield Settings(state_dir=folder, database_url=f"{POSTGRES_URL}?schema={schema}")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_problem() -> str | None:
    """None if PostgreSQL answers at POSTGRES_URL, else why not (the scenario is skipped)."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not available: {exc}"
