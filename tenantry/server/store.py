"""Maps Tenantry's settings onto the eventsourcing library's persistence settings."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from psycopg import sql

from tenantry.settings import Settings


def event_store_env(settings: Settings) -> dict[str, str]:
    """SQLite under the state directory by default; PostgreSQL for a postgresql:// URL."""
    if settings.database_url:
        return postgres_env(settings.database_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(settings.state_dir / "events.sqlite"),
        "SQLITE_LOCK_TIMEOUT": "30",
    }


def postgres_env(url: str) -> dict[str, str]:
    """`postgresql://user:password@host:port/dbname?schema=name` as eventsourcing settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"TENANTRY_DATABASE_URL must be postgresql://…, not {parts.scheme}://")
    query = parse_qs(parts.query)
    env = {
        # eventsourcing's PostgreSQL store, failing fast while the database is down.
        "PERSISTENCE_MODULE": "tenantry.server.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": query.get("connect_timeout", ["5"])[0],
        "POSTGRES_POOL_SIZE": query.get("pool_size", ["5"])[0],
        "POSTGRES_MAX_OVERFLOW": query.get("max_overflow", ["10"])[0],
        # No check of each pooled connection before use (a round trip each time, and after a
        # crash the pool backs off between failed checks past its timeout): a lost connection
        # fails its statement, and tenantry.server.postgres then replaces the pool's connections.
        "POSTGRES_PRE_PING": "n",
        # Off on purpose: with database functions on, tracking records were silently not written.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"][0]
        ensure_postgres_schema(env)
    return env


# The first key of the advisory lock held while Tenantry creates a schema's tables ("TNTR");
# the second is the schema's (see `schema_lock`).
SCHEMA_LOCK_KEY = 0x544E5452


@contextmanager
def schema_lock(env: Mapping[str, str]) -> Iterator[psycopg.Connection[Any]]:
    """Hold, on a connection of its own (yielded, autocommit), the lock under which the store's
    schema and tables are created, so that processes started together create them one at a
    time: PostgreSQL's `CREATE … IF NOT EXISTS` is not safe against a concurrent creator (the
    loser fails on a unique index of the catalog, e.g. "pg_type_typname_nsp_index").

    A session advisory lock, keyed by the schema (stores in other schemas don't wait); closing
    the connection releases it, also when the process dies holding it."""
    schema = env.get("POSTGRES_SCHEMA") or "public"
    # crc32 as a signed 32-bit integer: the lock's second key is an int4.
    schema_key = int.from_bytes(zlib.crc32(schema.encode()).to_bytes(4, "big"), signed=True)
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=int(env["POSTGRES_PORT"]),
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (SCHEMA_LOCK_KEY, schema_key))
        yield conn


def ensure_postgres_schema(env: dict[str, str]) -> None:
    """eventsourcing creates tables but not the schema they live in."""
    with schema_lock(env) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"]))
        )


@contextmanager
def creating_tables(settings: Settings) -> Iterator[None]:
    """Around the creation of the event store's or the views' tables (if missing) for
    `settings`: under `schema_lock` on PostgreSQL. Nothing on SQLite: the production layout's
    roles share PostgreSQL, and `tenantry up` runs every role in one process."""
    if not settings.database_url:
        yield
        return
    with schema_lock(postgres_env(settings.database_url)):
        yield


def view_store_url(settings: Settings) -> str:
    """The read models' database: the event store's PostgreSQL (tables `view_…`), else
    `views.sqlite` beside the SQLite event store."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{settings.state_dir / 'views.sqlite'}"
